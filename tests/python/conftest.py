"""pytest setup for the sageattention package tests.

Runs against the library named by SAGEATTN_LIBRARY (default: the CMake build
folder of this checkout) and the package in python/ (default: this checkout),
which gets the distribution metadata its wheel would have (see below).
GPU tests carry @pytest.mark.gpu and are skipped, with the reason printed,
where torch sees no CUDA device.
"""

import importlib.metadata
import importlib.util
import os
import sys
import tempfile

import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_DEFAULT_LIBRARY = os.path.join(_ROOT, "build", "libsageattn.so")

if "SAGEATTN_LIBRARY" not in os.environ and os.path.isfile(_DEFAULT_LIBRARY):
    os.environ["SAGEATTN_LIBRARY"] = _DEFAULT_LIBRARY
if os.path.join(_ROOT, "python") not in sys.path:
    sys.path.insert(0, os.path.join(_ROOT, "python"))


# Clients such as diffusers take the installed sageattention's version from its
# distribution metadata, which a checkout put on sys.path lacks: diffusers would
# refuse it as an old or absent package. Unless a distribution is installed
# (a wheel, whose own metadata then counts), give the checkout the metadata its
# wheel carries: its name and version (the version scripts/wheel_version.py
# gives the wheel of this tree, without the label).
_checkout_metadata = None


def _give_the_checkout_metadata():
    global _checkout_metadata
    try:
        importlib.metadata.version("sageattention")
        return
    except importlib.metadata.PackageNotFoundError:
        pass
    spec = importlib.util.spec_from_file_location("_wheel_version", os.path.join(_ROOT, "scripts", "wheel_version.py"))
    wheel_version = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wheel_version)
    version = wheel_version.package_version()
    _checkout_metadata = tempfile.TemporaryDirectory(prefix="sageattention-metadata-")
    info = os.path.join(_checkout_metadata.name, f"sageattention-{version}.dist-info")
    os.mkdir(info)
    with open(os.path.join(info, "METADATA"), "w") as f:
        f.write(f"Metadata-Version: 2.1\nName: sageattention\nVersion: {version}\n")
    sys.path.append(_checkout_metadata.name)


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped without one, with the reason shown)")
    _give_the_checkout_metadata()


def _gpu_skip_reason():
    import torch

    if not torch.cuda.is_available():
        return f"GPU test skipped: no CUDA device visible to torch {torch.__version__} (torch.cuda.is_available() is False)"
    return None


def pytest_collection_modifyitems(config, items):
    reason = _gpu_skip_reason()
    if reason is None:
        return
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))


def pytest_terminal_summary(terminalreporter):
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if "GPU test skipped" in str(r.longrepr)]
    if skipped:
        terminalreporter.write_line(
            f"WARNING: {len(skipped)} GPU tests were SKIPPED (reasons above with -rs); "
            "they must be run on a GPU machine with a CUDA build of libsageattn.",
            yellow=True,
            bold=True,
        )
