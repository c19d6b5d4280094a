"""scripts/cuda_redist.py (the Windows job's CUDA install) against a manifest and
archives written by the test, served from a file:// URL: nothing is downloaded."""

import hashlib
import importlib.util
import io
import json
import os
import tarfile
import zipfile

import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
spec = importlib.util.spec_from_file_location("cuda_redist", os.path.join(_ROOT, "scripts", "cuda_redist.py"))
cuda_redist = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cuda_redist)


def _zip(top, files):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(f"{top}/{name}", data)
    return buf.getvalue()


def _tar(top, files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mode = len(data), 0o755
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


COMPONENTS = {
    "cuda_nvcc": {"bin/nvcc.exe": b"nvcc", "bin/nvcc.profile": b"profile", "include/crt/host_defines.h": b"//"},
    "cuda_cudart": {"include/cuda_runtime.h": b"//", "lib/x64/cudart_static.lib": b"lib"},
    "cuda_cccl": {"include/cuda/std/cstdint": b"//"},
    "libnvvm": {"nvvm/bin/cicc.exe": b"cicc"},
}


def _server(tmp_path, components=COMPONENTS, corrupt=None, platform="windows-x86_64", pack=_zip, ext="zip"):
    root = tmp_path / "redist"
    manifest = {"release_label": "13.0.2"}
    for name, files in components.items():
        top = f"{name}-{platform}-13.0.1-archive"
        data = pack(top, files)
        rel = f"{name}/{platform}/{top}.{ext}"
        (root / name / platform).mkdir(parents=True)
        (root / rel).write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        if name == corrupt:
            digest = "0" * 64
        manifest[name] = {"name": name, "version": "13.0.1", platform: {"relative_path": rel, "sha256": digest}}
    (root / "redistrib_13.0.2.json").write_text(json.dumps(manifest))
    return root.as_uri()


def test_installs_a_toolkit_layout(tmp_path, capsys):
    url = _server(tmp_path)
    dest = tmp_path / "cuda"
    assert cuda_redist.main(["--version", "13.0.2", "--platform", "windows-x86_64", "--dest", str(dest), "--base-url", url]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == str(dest / "bin" / "nvcc.exe")
    for files in COMPONENTS.values():
        for name, data in files.items():
            assert (dest / name).read_bytes() == data
    assert "libnvvm: libnvvm-windows-x86_64-13.0.1-archive.zip" in out.err  # taken because listed
    assert "cuda_crt" not in out.err


def test_linux_tar_archives(tmp_path):
    url = _server(tmp_path, {"cuda_nvcc": {"bin/nvcc": b"x"}, "cuda_cudart": {"include/a.h": b""},
                             "cuda_cccl": {"include/b.h": b""}}, platform="linux-x86_64", pack=_tar, ext="tar.xz")
    nvcc = cuda_redist.install("13.0.2", "linux-x86_64", str(tmp_path / "cuda"), url)
    assert nvcc == str(tmp_path / "cuda" / "bin" / "nvcc") and os.access(nvcc, os.X_OK)


def test_digest_mismatch_stops(tmp_path):
    url = _server(tmp_path, corrupt="cuda_cudart")
    with pytest.raises(cuda_redist.RedistError, match="cuda_cudart-windows-x86_64-13.0.1-archive.zip: SHA-256 .* the manifest says 0000"):
        cuda_redist.install("13.0.2", "windows-x86_64", str(tmp_path / "cuda"), url)


def test_required_component_missing_stops(tmp_path):
    url = _server(tmp_path, {k: v for k, v in COMPONENTS.items() if k != "cuda_cccl"})
    with pytest.raises(cuda_redist.RedistError, match="the manifest of CUDA 13.0.2 has no cuda_cccl"):
        cuda_redist.install("13.0.2", "windows-x86_64", str(tmp_path / "cuda"), url)


def test_platform_without_archive_stops(tmp_path):
    url = _server(tmp_path)
    with pytest.raises(cuda_redist.RedistError, match="cuda_nvcc 13.0.1 has no archive for linux-sbsa"):
        cuda_redist.install("13.0.2", "linux-sbsa", str(tmp_path / "cuda"), url)


def test_unknown_release_says_which_url(tmp_path, capsys):
    url = _server(tmp_path)
    assert cuda_redist.main(["--version", "13.9.9", "--platform", "windows-x86_64", "--dest", str(tmp_path / "c"), "--base-url", url]) == 1
    assert "cannot download " + url + "/redistrib_13.9.9.json" in capsys.readouterr().err


def test_archive_escaping_its_folder_is_refused(tmp_path):
    data = _zip("top", {"../../evil.txt": b"x"})
    with pytest.raises(cuda_redist.RedistError, match="would land outside"):
        cuda_redist.unpack(data, "x.zip", str(tmp_path / "dest"))
    assert not (tmp_path / "evil.txt").exists()


def test_archive_with_several_top_folders_is_refused(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a/x", b"")
        z.writestr("b/y", b"")
    with pytest.raises(cuda_redist.RedistError, match=r"expected one top-level folder, found \['a', 'b'\]"):
        cuda_redist.unpack(buf.getvalue(), "x.zip", str(tmp_path / "dest"))
