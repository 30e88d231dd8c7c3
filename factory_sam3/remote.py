"""The shared S3 dataset remote: set it up, check it, and push/pull with bounded waits.

    python -m factory_sam3.remote setup --url s3://bucket/factory-sam3 [--endpoint http://minio:9000]
    python -m factory_sam3.remote check            # one quick request: reachable? credentials? bucket?
    python -m factory_sam3.remote pull [dvc args]  # check, then `dvc pull` with bounded retries
    python -m factory_sam3.remote push [dvc args]

Credentials never go into the repository: they come from the environment (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_PROFILE) or from ``dvc remote modify --local``, which
writes the git-ignored ``.dvc/config.local`` (``setup --local-credentials`` copies them there from
the environment).

Why timeouts: against an endpoint that accepts connections but never answers, a default ``dvc pull``
waits for minutes (botocore: 60 s read timeout x 5 attempts; s3fs retries each call 5 more times).
``setup`` writes ``connect_timeout``/``read_timeout`` into the remote's config, and ``push``/``pull``
here export ``AWS_MAX_ATTEMPTS`` (default 2) so a dead remote fails in seconds, naming the remote.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from factory_sam3.errors import UserError, cli_entry

DEFAULT_REMOTE = "storage"
DEFAULT_CONNECT_TIMEOUT_S = 3
DEFAULT_READ_TIMEOUT_S = 10
DEFAULT_MAX_ATTEMPTS = "2"


@dataclass
class RemoteConfig:
    name: str
    url: str
    endpoint: str | None
    region: str | None
    profile: str | None
    access_key_id: str | None
    secret_access_key: str | None
    session_token: str | None
    connect_timeout: int
    read_timeout: int

    @property
    def bucket(self) -> str:
        return self.url[len("s3://") :].split("/", 1)[0]

    def describe(self) -> str:
        where = f" at {self.endpoint}" if self.endpoint else ""
        return f"remote '{self.name}' ({self.url}{where})"


def _dvc_bin() -> str:
    candidate = Path(sys.executable).with_name("dvc")
    return str(candidate) if candidate.exists() else "dvc"


def _dvc(*args: str, cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([_dvc_bin(), *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise UserError(f"`dvc {' '.join(args)}` failed: {result.stderr.strip() or result.stdout.strip()}", "dvc")
    return result


def load_remote(name: str | None = None, root: str | os.PathLike = ".") -> RemoteConfig:
    """Read the merged DVC config (repo + local) for remote ``name`` (default: core.remote)."""
    from dvc.config import Config
    from dvc.repo import Repo

    try:
        config = Config(dvc_dir=Repo.find_dvc_dir(str(root)))
    except Exception as err:
        raise UserError(f"cannot read the DVC config ({type(err).__name__}: {err})", ".dvc/config") from None
    remotes = config.get("remote", {})
    name = name or config.get("core", {}).get("remote")
    if not name:
        raise UserError(
            "no default remote: run `python -m factory_sam3.remote setup --url s3://...` or pass --remote NAME",
            ".dvc/config",
        )
    if name not in remotes:
        raise UserError(f"remote '{name}' is not configured (known: {', '.join(remotes) or 'none'})", ".dvc/config")
    conf = remotes[name]
    url = conf.get("url", "")
    if not url.startswith("s3://"):
        raise UserError(f"remote '{name}' is {url!r}, not an s3:// URL", ".dvc/config")
    return RemoteConfig(
        name=name,
        url=url,
        endpoint=conf.get("endpointurl"),
        region=conf.get("region"),
        profile=conf.get("profile"),
        access_key_id=conf.get("access_key_id"),
        secret_access_key=conf.get("secret_access_key"),
        session_token=conf.get("session_token"),
        connect_timeout=int(conf.get("connect_timeout") or 60),
        read_timeout=int(conf.get("read_timeout") or 60),
    )


def check(remote: RemoteConfig) -> None:
    """One bounded request (HeadBucket, single attempt) with the remote's own timeouts and credentials."""
    import boto3
    from botocore.config import Config as BotoConfig
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        ReadTimeoutError,
    )

    session = boto3.session.Session(profile_name=remote.profile) if remote.profile else boto3.session.Session()
    client = session.client(
        "s3",
        endpoint_url=remote.endpoint,
        region_name=remote.region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        aws_access_key_id=remote.access_key_id,
        aws_secret_access_key=remote.secret_access_key,
        aws_session_token=remote.session_token,
        config=BotoConfig(
            connect_timeout=remote.connect_timeout,
            read_timeout=remote.read_timeout,
            retries={"max_attempts": 1, "mode": "standard"},
        ),
    )
    what = remote.describe()
    try:
        client.head_bucket(Bucket=remote.bucket)
    except NoCredentialsError:
        raise UserError(
            "no credentials: export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run "
            f"`dvc remote modify --local {remote.name} access_key_id ...`",
            what,
        ) from None
    except (ConnectTimeoutError, ReadTimeoutError) as err:
        raise UserError(
            f"endpoint did not answer within {remote.connect_timeout}+{remote.read_timeout} s "
            f"({type(err).__name__}); is the server up?",
            what,
        ) from None
    except EndpointConnectionError as err:
        raise UserError(
            f"cannot connect to the endpoint ({err}); is the server up and endpointurl right?", what
        ) from None
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        if code in ("404", "NoSuchBucket"):
            raise UserError(f"bucket '{remote.bucket}' does not exist", what) from None
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            raise UserError(f"access denied ({code}): check the credentials", what) from None
        raise UserError(f"S3 error {code}: {err}", what) from None
    except BotoCoreError as err:
        raise UserError(f"{type(err).__name__}: {err}", what) from None


def setup(
    name: str,
    url: str,
    endpoint: str | None,
    default: bool,
    connect_timeout: int,
    read_timeout: int,
    region: str | None,
    local_credentials: bool,
) -> None:
    if not url.startswith("s3://"):
        raise UserError(f"expected an s3://bucket/prefix URL, got {url!r}", "--url")
    _dvc("remote", "add", "--force", *(["--default"] if default else []), name, url)
    settings = {"connect_timeout": str(connect_timeout), "read_timeout": str(read_timeout)}
    if endpoint:
        settings["endpointurl"] = endpoint
    if region:
        settings["region"] = region
    for key, value in settings.items():
        _dvc("remote", "modify", name, key, value)
    if local_credentials:  # git-ignored .dvc/config.local, never committed
        pairs = {"access_key_id": "AWS_ACCESS_KEY_ID", "secret_access_key": "AWS_SECRET_ACCESS_KEY"}
        missing = [env for env in pairs.values() if not os.environ.get(env)]
        if missing:
            raise UserError(f"--local-credentials needs {' and '.join(missing)} in the environment", "setup")
        for key, env in pairs.items():
            _dvc("remote", "modify", "--local", name, key, os.environ[env])


def transfer(command: str, remote_name: str | None, extra: list[str]) -> int:
    remote = load_remote(remote_name)
    check(remote)
    env = dict(os.environ)
    env.setdefault("AWS_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS)
    result = subprocess.run([_dvc_bin(), command, "-r", remote.name, *extra], env=env)
    if result.returncode != 0:
        print(
            f"error: dvc {command} with {remote.describe()} failed (exit {result.returncode}); "
            f"the lines above say which files. Rerun the same command to resume: finished files are skipped.",
            file=sys.stderr,
        )
    return result.returncode


@cli_entry
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m factory_sam3.remote", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("setup", help="add/replace the S3 remote with timeouts")
    s.add_argument("--name", default=DEFAULT_REMOTE)
    s.add_argument("--url", required=True, help="s3://bucket/prefix")
    s.add_argument("--endpoint", help="endpoint URL of an S3-compatible store (MinIO, Ceph)")
    s.add_argument("--region")
    s.add_argument("--connect-timeout", type=int, default=DEFAULT_CONNECT_TIMEOUT_S)
    s.add_argument("--read-timeout", type=int, default=DEFAULT_READ_TIMEOUT_S)
    s.add_argument("--no-default", action="store_true", help="do not make it the default remote")
    s.add_argument(
        "--local-credentials",
        action="store_true",
        help="copy AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY from the env into .dvc/config.local",
    )
    c = sub.add_parser("check", help="is the remote reachable with these credentials?")
    c.add_argument("--remote")
    for verb in ("push", "pull"):
        p = sub.add_parser(verb, help=f"check, then dvc {verb} (extra args go to dvc)")
        p.add_argument("--remote")
    args, extra = parser.parse_known_args(argv)
    if args.command == "setup":
        setup(
            args.name,
            args.url,
            args.endpoint,
            not args.no_default,
            args.connect_timeout,
            args.read_timeout,
            args.region,
            args.local_credentials,
        )
        print(f"remote '{args.name}' -> {args.url}" + (f" at {args.endpoint}" if args.endpoint else ""))
        return 0
    if extra:
        if args.command == "check":
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "check":
        remote = load_remote(args.remote)
        check(remote)
        print(f"ok: {remote.describe()} reachable, bucket '{remote.bucket}' accessible")
        return 0
    return transfer(args.command, args.remote, extra)


if __name__ == "__main__":
    sys.exit(main())
