"""pytest setup for the sageattention package tests.

Runs against the library named by SAGEATTN_LIBRARY (default: the CMake build
folder of this checkout) and the package in python/ (default: this checkout).
GPU tests carry @pytest.mark.gpu and are skipped, with the reason printed,
where torch sees no CUDA device.
"""

import os
import sys

import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_DEFAULT_LIBRARY = os.path.join(_ROOT, "build", "libsageattn.so")

if "SAGEATTN_LIBRARY" not in os.environ and os.path.isfile(_DEFAULT_LIBRARY):
    os.environ["SAGEATTN_LIBRARY"] = _DEFAULT_LIBRARY
if os.path.join(_ROOT, "python") not in sys.path:
    sys.path.insert(0, os.path.join(_ROOT, "python"))


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped without one, with the reason shown)")


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
