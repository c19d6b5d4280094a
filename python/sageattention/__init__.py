"""sageattention: accurate low-bit attention (INT8 Q·Kᵀ, FP8/FP16 P·V).

The reference SageAttention 2.x API (sageattn, sageattn_varlen, ...), a
drop-in replacement for torch's scaled_dot_product_attention (sdpa,
patch_sdpa), the exact float64 reference, all over libsageattn's C ABI, and
sequence parallelism across processes (sageattention.parallel).
Importing fails with an ImportError that names the cause when the library
cannot be loaded or speaks another ABI. Only `python -m sageattention` (the
doctor) gets the package without it, so that it can report that error.
"""

import sys as _sys


def _run_as_main() -> bool:
    """True while `python -m sageattention ...` is importing this package on
    its way to __main__: runpy sets sys.argv[0] to "-m" until it has found the
    module to run. Python >= 3.10 also tells which module was named."""
    if _sys.argv[:1] != ["-m"]:
        return False
    orig = getattr(_sys, "orig_argv", None)
    if orig is None:  # Python 3.9
        return True
    for i, arg in enumerate(orig[1:], 1):
        if arg == "-m":
            return orig[i + 1 : i + 2] == [__name__]
        if arg.startswith("-m"):
            return arg[2:] == __name__
    return False


# The error that stopped the import, kept only for `python -m sageattention`:
# its doctor reports it with what to do. Any other import raises it.
_import_error = None

try:
    from ._counting import CallCounts, count_calls
    from ._lib import (
        InvalidProblemError,
        LibraryError,
        SageAttnError,
        UnsupportedError,
        build_info,
        library_path,
    )
    from ._lib import version as _library_version
    from .core import (
        reference_attention,
        sageattn,
        sageattn_qk_int8_pv_fp8_cuda,
        sageattn_qk_int8_pv_fp8_cuda_sm90,
        sageattn_qk_int8_pv_fp16_cuda,
        sageattn_qk_int8_pv_fp16_triton,
        sageattn_varlen,
    )
    from .sdpa import patch_sdpa, patched_sdpa, sdpa, unpatch_sdpa
    from . import parallel  # sequence parallelism over torch.distributed (docs/PARALLEL.md)

    from ._api_version import API_VERSION as _API_VERSION

    try:
        # A wheel carries _version.py, written by its build: the wheel's version,
        # with the CUDA major as a local label ("2.2.0.0.1.0+cu13", "...+cpu").
        from ._version import __version__
    except ImportError:
        # A source checkout: the SageAttention API it implements, then the loaded
        # library's own release ("2.2.0" + "0.1.0"), as a wheel has it (docs/INSTALL.md).
        __version__ = f"{_API_VERSION}.{_library_version()}"
except ImportError as _e:
    if not _run_as_main():
        raise
    _import_error = _e

    def __getattr__(name):
        # The package is empty here: using it raises the import's own error.
        raise ImportError(str(_import_error)) from _import_error

__all__ = [
    "CallCounts",
    "InvalidProblemError",
    "LibraryError",
    "SageAttnError",
    "UnsupportedError",
    "build_info",
    "count_calls",
    "library_path",
    "parallel",
    "patch_sdpa",
    "patched_sdpa",
    "reference_attention",
    "sageattn",
    "sageattn_qk_int8_pv_fp8_cuda",
    "sageattn_qk_int8_pv_fp8_cuda_sm90",
    "sageattn_qk_int8_pv_fp16_cuda",
    "sageattn_qk_int8_pv_fp16_triton",
    "sageattn_varlen",
    "sdpa",
    "unpatch_sdpa",
]
