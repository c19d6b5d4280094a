"""Installs the parts of a CUDA toolkit that building the library needs (nvcc, the
runtime's headers and static library, CCCL) from NVIDIA's redistributable
archives, without an installer: the release workflow's Windows job uses it.

    python scripts/cuda_redist.py --version 13.0.2 --platform windows-x86_64 --dest DIR

NVIDIA publishes, for each toolkit release, a manifest (redistrib_<version>.json)
naming every component's archive for each platform with its SHA-256. This reads
the manifest, downloads the components, checks each digest, and unpacks them
into DIR, which then is laid out like an installed toolkit (DIR/bin/nvcc[.exe],
DIR/include, DIR/lib). Prints the nvcc path. Components split out of cuda_nvcc
in later releases (cuda_crt, libnvvm: CUDA 13) are taken when the manifest
lists them.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import urllib.request
import zipfile

BASE_URL = "https://developer.download.nvidia.com/compute/cuda/redist"
REQUIRED = ("cuda_nvcc", "cuda_cudart", "cuda_cccl")
IF_LISTED = ("cuda_crt", "libnvvm")


class RedistError(RuntimeError):
    pass


def _fetch(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=300) as r:
            return r.read()
    except OSError as e:
        raise RedistError(f"cannot download {url}: {e}") from e


def plan(manifest: dict, platform: str) -> list[tuple[str, str, str]]:
    """(component, relative_path, sha256) of each archive to install."""
    out = []
    for name in REQUIRED + IF_LISTED:
        entry = manifest.get(name)
        if entry is None:
            if name in REQUIRED:
                raise RedistError(f"the manifest of CUDA {manifest.get('release_label', '?')} has no {name}")
            continue
        archive = entry.get(platform)
        if archive is None:
            raise RedistError(f"{name} {entry.get('version', '')} has no archive for {platform}")
        out.append((name, archive["relative_path"], archive["sha256"]))
    return out


def _members(names: list[str], archive: str) -> str:
    """The one top-level folder every member of an archive sits in."""
    tops = {n.replace("\\", "/").split("/", 1)[0] for n in names}
    if len(tops) != 1:
        raise RedistError(f"{archive}: expected one top-level folder, found {sorted(tops)}")
    return tops.pop()


def _target(dest: str, name: str, top: str, archive: str) -> str | None:
    rel = name.replace("\\", "/")[len(top) :].lstrip("/")
    if not rel:
        return None
    path = os.path.normpath(os.path.join(dest, rel))
    if os.path.commonpath([path, os.path.normpath(dest)]) != os.path.normpath(dest):
        raise RedistError(f"{archive}: {name} would land outside {dest}")
    return path


def unpack(data: bytes, archive: str, dest: str) -> int:
    """Unpacks an archive's top-level folder into dest (merging with what is there)."""
    count = 0
    if archive.endswith(".zip"):
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            top = _members(z.namelist(), archive)
            for info in z.infolist():
                path = _target(dest, info.filename, top, archive)
                if path is None or info.is_dir():
                    continue
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with z.open(info) as src, open(path, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                mode = info.external_attr >> 16
                if mode & 0o111:
                    os.chmod(path, 0o755)
                count += 1
    elif archive.endswith((".tar.xz", ".tar.gz")):
        with tarfile.open(fileobj=io.BytesIO(data)) as t:
            top = _members(t.getnames(), archive)
            for member in t.getmembers():
                path = _target(dest, member.name, top, archive)
                if path is None or not (member.isfile() or member.issym()):
                    continue
                os.makedirs(os.path.dirname(path), exist_ok=True)
                if member.issym():
                    if os.path.lexists(path):
                        os.remove(path)
                    os.symlink(member.linkname, path)
                else:
                    with t.extractfile(member) as src, open(path, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    os.chmod(path, member.mode & 0o755 | 0o644)
                count += 1
    else:
        raise RedistError(f"{archive}: not a .zip, .tar.xz or .tar.gz archive")
    return count


def install(version: str, platform: str, dest: str, base_url: str = BASE_URL) -> str:
    manifest_url = f"{base_url}/redistrib_{version}.json"
    try:
        manifest = json.loads(_fetch(manifest_url))
    except json.JSONDecodeError as e:
        raise RedistError(f"{manifest_url} is not JSON: {e}") from e
    os.makedirs(dest, exist_ok=True)
    for name, rel, sha256 in plan(manifest, platform):
        data = _fetch(f"{base_url}/{rel}")
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256:
            raise RedistError(f"{rel}: SHA-256 {digest}, the manifest says {sha256}")
        files = unpack(data, rel, dest)
        print(f"{name}: {os.path.basename(rel)} ({len(data) // 1024} KiB, {files} files)", file=sys.stderr)
    nvcc = os.path.join(dest, "bin", "nvcc.exe" if platform.startswith("windows") else "nvcc")
    if not os.path.isfile(nvcc):
        raise RedistError(f"no {nvcc} after unpacking cuda_nvcc")
    return nvcc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--version", required=True, help="a toolkit release, e.g. 13.0.2 or 12.9.1")
    ap.add_argument("--platform", required=True, help="windows-x86_64, linux-x86_64 or linux-sbsa")
    ap.add_argument("--dest", required=True, help="the folder to install into")
    ap.add_argument("--base-url", default=BASE_URL, help="where the manifest and archives are")
    args = ap.parse_args(argv)
    try:
        print(install(args.version, args.platform, args.dest, args.base_url.rstrip("/")))
    except RedistError as e:
        print(f"cuda_redist.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
