#!/usr/bin/env python3
"""Rebuild configs/plots/offline_index.html: DVC's plots page with Vega, Vega-Lite and Vega-Embed inlined.

`dvc plots show` writes an HTML page whose charts load these three libraries from a CDN; on an offline
plant network the charts stay blank. This template (set as `plots.html_template` in .dvc/config, so the
plain command uses it) carries pinned npm builds inline and has no `{scripts}` placeholder, so DVC's CDN
<script> tags are never written.

Run from the repository root (needs `npm`, which fetches the pinned tarballs from the npm registry)::

    python configs/plots/vendor_vega.py            # or --tarballs DIR with the three .tgz files already there

Each tarball is checked against the sha256 below before anything is written; the licenses are copied to
configs/plots/licenses/.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "offline_index.html"
LICENSES = HERE / "licenses"

# name, version, sha256 of the npm tarball, file inside it (the UMD build that defines a global)
PACKAGES = (
    ("vega", "5.33.1", "1b8504b6731c5311be3269c4d84ca996a5cc293bc772283293ede20c490e16c3", "build/vega.min.js"),
    (
        "vega-lite",
        "5.23.0",
        "e4cbfdd8f6f1abe381c59cd558fd6a559c12b1496bfdf2e0c3295263a40fe4da",
        "build/vega-lite.min.js",
    ),
    (
        "vega-embed",
        "6.29.0",
        "ecf1ee709c2bac9e0a4ead6908114b05b62c71493e10a8a4308109bb070f8eb1",
        "build/vega-embed.min.js",
    ),
)

# The vega tarball ships no LICENSE file; its package.json declares BSD-3-Clause, the same text and
# copyright holder as vega-lite's (github.com/vega/vega/blob/main/LICENSE).
VEGA_LICENSE_FROM = "vega-lite"

PAGE = """<!DOCTYPE html>
<html>
<head>
    {{refresh_tag}}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- Offline: {versions} inlined from npm (licenses: configs/plots/licenses/). Built by
         configs/plots/vendor_vega.py; no CDN is contacted. -->
{scripts}
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""

# DVC fills these by plain string replacement; a library containing one would be corrupted.
PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")


def fetch_tarballs(folder: Path) -> None:
    specs = [f"{name}@{version}" for name, version, _, _ in PACKAGES]
    subprocess.run(["npm", "pack", "--silent", *specs], cwd=folder, check=True, stdout=subprocess.DEVNULL)


def read_member(tarball: Path, member: str) -> str:
    with tarfile.open(tarball) as archive:
        handle = archive.extractfile(f"package/{member}")
        if handle is None:
            raise SystemExit(f"{tarball}: no package/{member}")
        return handle.read().decode("utf-8")


def build(tarballs: Path) -> None:
    scripts, licenses = [], {}
    for name, version, sha256, member in PACKAGES:
        tarball = tarballs / f"{name}-{version}.tgz"
        digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
        if digest != sha256:
            raise SystemExit(f"{tarball}: sha256 {digest}, expected {sha256}; refusing to vendor it")
        # the source-map comment would only make a browser's dev tools look for a file that is not there
        code = re.sub(r"^//# sourceMappingURL=.*$", "", read_member(tarball, member), flags=re.MULTILINE)
        bad = [p for p in PLACEHOLDERS if p in code] + (["</script"] if "</script" in code.lower() else [])
        if bad:
            raise SystemExit(f"{tarball}:{member} contains {bad}; it cannot be inlined safely")
        scripts.append(f'    <script type="text/javascript">/* {name}@{version} {member} */\n{code}\n    </script>')
        try:
            licenses[name] = read_member(tarball, "LICENSE")
        except KeyError:
            licenses[name] = None
    if licenses["vega"] is None:
        licenses["vega"] = (
            f"(vega's npm tarball has no LICENSE file; package.json: BSD-3-Clause, same text and "
            f"holder as {VEGA_LICENSE_FROM}'s, reproduced here)\n\n" + licenses[VEGA_LICENSE_FROM]
        )
    versions = ", ".join(f"{name}@{version}" for name, version, _, _ in PACKAGES)
    TEMPLATE.write_text(PAGE.format(versions=versions, scripts="\n".join(scripts)), encoding="utf-8")
    LICENSES.mkdir(exist_ok=True)
    for name, text in licenses.items():
        (LICENSES / f"{name}.LICENSE").write_text(text, encoding="utf-8")
    print(f"wrote {TEMPLATE} ({TEMPLATE.stat().st_size // 1024} KiB: {versions})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tarballs", type=Path, help="folder holding the three npm .tgz files (default: npm pack)")
    args = parser.parse_args()
    if args.tarballs:
        build(args.tarballs)
        return
    with tempfile.TemporaryDirectory() as tmp:
        fetch_tarballs(Path(tmp))
        build(Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
