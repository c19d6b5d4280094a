"""sageattention: accurate low-bit attention (INT8 Q·Kᵀ, FP8/FP16 P·V).

The reference SageAttention 2.x API (sageattn, sageattn_varlen, ...), a
drop-in replacement for torch's scaled_dot_product_attention (sdpa,
patch_sdpa), the exact float64 reference, all over libsageattn's C ABI, and
sequence parallelism across processes (sageattention.parallel).
Importing fails with an ImportError that names the cause when the library
cannot be loaded or speaks another ABI.
"""

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

try:
    # A wheel carries _version.py, written by its build: the wheel's version,
    # with the CUDA major as a local label ("0.1.0+cu13", "0.1.0+cpu").
    from ._version import __version__
except ImportError:
    # A source checkout: the loaded library's own version ("0.1.0").
    __version__ = _library_version()

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
