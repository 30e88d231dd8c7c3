"""The user's data (raw layout, as for ``folder``) from ``s3://bucket/prefix`` or ``s3://bucket/data.zip``.

Credentials come from the environment as boto3 finds them (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY,
AWS_PROFILE, instance roles); ``fetch.endpoint_url`` points at MinIO, Ceph or any S3-compatible store.
Timeouts and retries are short, so a dead endpoint fails in seconds with a message that names it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from factory_sam3.errors import UserError
from factory_sam3.sources import folder

CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 60
MAX_ATTEMPTS = 2


def url_problem(url: object) -> str | None:
    """What is wrong with ``fetch.path`` for the s3 source, or None."""
    if not isinstance(url, str) or not url.startswith("s3://"):
        return f"must be s3://bucket/prefix for the s3 source, got {url!r}"
    if not url[len("s3://") :].partition("/")[0]:
        return f"names no bucket: {url!r}"
    return None


def parse_url(url: object) -> tuple[str, str]:
    problem = url_problem(url)
    if problem:
        raise UserError(f"'fetch.path' {problem}")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    return bucket, prefix


def client(endpoint_url: str | None):
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
    )
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return boto3.client("s3", endpoint_url=endpoint_url or None, config=config, region_name=region)


def _explain(err: Exception, url: str, endpoint: str | None) -> UserError:
    from botocore import exceptions as bx

    where = endpoint or "the AWS S3 endpoint"
    if isinstance(err, bx.NoCredentialsError):
        return UserError(
            "no S3 credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)", url
        )
    if isinstance(
        err, (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError, bx.ConnectionClosedError)
    ):
        return UserError(f"cannot reach S3 endpoint {where} ({err}); check fetch.endpoint_url and the network", url)
    if isinstance(err, bx.ClientError):
        code = err.response.get("Error", {}).get("Code", "")
        message = err.response.get("Error", {}).get("Message", "")
        return UserError(f"S3 at {where} refused the request: {code} {message}".strip(), url)
    return UserError(f"S3 at {where} failed: {err}", url)


def _relative_key(key: str, prefix: str, url: str) -> PurePosixPath:
    rel = PurePosixPath(key[len(prefix) :].lstrip("/"))
    if key.startswith("/") or ".." in rel.parts or not rel.parts:
        raise UserError("object key would be written outside the download folder; refusing", url, f"key '{key}'")
    return rel


def download(url: str, endpoint_url: str | None, target: Path) -> Path:
    """Download the object or every object under the prefix into ``target``; returns what to read."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = parse_url(url)
    s3 = client(endpoint_url)
    try:
        if prefix.lower().endswith(".zip"):
            archive = target / PurePosixPath(prefix).name
            s3.download_file(bucket, prefix, str(archive))
            return archive
        listing_prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        keys = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=listing_prefix):
            keys.extend(obj["Key"] for obj in page.get("Contents", []) if not obj["Key"].endswith("/"))
        if not keys:
            raise UserError(f"no objects under s3://{bucket}/{listing_prefix}", url)
        for key in tqdm(sorted(keys), desc="fetch: s3 download", unit="file"):
            rel = _relative_key(key, listing_prefix, url)
            destination = target.joinpath(*rel.parts)
            destination.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, key, str(destination))
    except (BotoCoreError, ClientError) as err:
        raise _explain(err, url, endpoint_url) from None
    entries = list(target.iterdir())
    if len(entries) == 1 and entries[0].suffix.lower() == ".zip":
        return entries[0]
    return target


def fetch(params, out: Path) -> dict:
    url = params.path
    endpoint = params.endpoint_url
    scratch = Path(tempfile.mkdtemp(prefix="factory-sam3-s3-"))
    try:
        local = download(url, endpoint, scratch)
        counts = folder.fetch_local(local, out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"source": "s3", "path": url, "endpoint_url": endpoint, "counts": counts}
