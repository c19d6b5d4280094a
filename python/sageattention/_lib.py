"""ctypes binding of the C ABI in include/sageattn/sageattn.h.

This module needs no PyTorch: it loads libsageattn, mirrors its structs and
turns status codes into Python exceptions. Everything torch-specific lives in
_ops.py and the modules it splits its work into.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading

# The constants of sageattn.h without their SAGEATTN_ prefix, and below its structs;
# tests/python/test_abi_mirror.py reads the header and fails where they disagree.
ABI_VERSION = 1
MAX_HEAD_DIM = 256

# sageattn_status
SUCCESS = 0
ERROR_NULL_POINTER = 1
ERROR_ABI_MISMATCH = 2
ERROR_INVALID_DTYPE = 3
ERROR_INVALID_SHAPE = 4
ERROR_INVALID_HEAD_DIM = 5
ERROR_INVALID_HEADS = 6
ERROR_INVALID_STRIDE = 7
ERROR_OVERFLOW = 8
ERROR_MISALIGNED = 9
ERROR_INVALID_SEQLENS = 10
ERROR_INVALID_MASK = 11
ERROR_INVALID_OPTION = 12
ERROR_INVALID_SCALE = 13
ERROR_WORKSPACE_TOO_SMALL = 14
ERROR_UNSUPPORTED = 15
ERROR_DEVICE = 16
ERROR_OUT_OF_MEMORY = 17
ERROR_INTERNAL = 18

# sageattn_dtype
DTYPE_UNSET = 0
DTYPE_FP16 = 1
DTYPE_BF16 = 2
DTYPE_FP32 = 3

DEVICE_CPU = 0
DEVICE_CUDA = 1

ALGORITHM_QUANTIZED = 0
ALGORITHM_EXACT = 1

QK_PER_THREAD = 0
QK_PER_WARP = 1
QK_PER_BLOCK = 2

QK_AUTO = 0
QK_INT8 = 1
QK_INPUT = 2

PV_AUTO = 0
PV_FP8 = 1
PV_FP16 = 2

ACCUM_AUTO = 0
ACCUM_FP32 = 1
ACCUM_FP32_FP32 = 2
ACCUM_FP32_FP16 = 3
ACCUM_FP16_FP32 = 4

MASK_NONE = 0
MASK_BOOL = 1
MASK_ADDITIVE = 2

BACKEND_CPU = 1 << 0
BACKEND_CUDA = 1 << 1


class Tensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("batch_stride", ctypes.c_int64),
        ("head_stride", ctypes.c_int64),
        ("token_stride", ctypes.c_int64),
    ]


class Mask(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int32),
        ("dtype", ctypes.c_int32),
        ("data", ctypes.c_void_p),
        ("batch_stride", ctypes.c_int64),
        ("head_stride", ctypes.c_int64),
        ("q_stride", ctypes.c_int64),
        ("kv_stride", ctypes.c_int64),
    ]


class Problem(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("abi_version", ctypes.c_uint32),
        ("device_type", ctypes.c_int32),
        ("device_index", ctypes.c_int32),
        ("dtype", ctypes.c_int32),
        ("algorithm", ctypes.c_int32),
        ("batch", ctypes.c_int64),
        ("heads_q", ctypes.c_int64),
        ("heads_kv", ctypes.c_int64),
        ("len_q", ctypes.c_int64),
        ("len_kv", ctypes.c_int64),
        ("head_dim", ctypes.c_int64),
        ("q", Tensor),
        ("k", Tensor),
        ("v", Tensor),
        ("out", Tensor),
        ("cu_seqlens_q", ctypes.c_void_p),
        ("cu_seqlens_kv", ctypes.c_void_p),
        ("max_len_q", ctypes.c_int64),
        ("max_len_kv", ctypes.c_int64),
        ("causal", ctypes.c_int32),
        ("scale", ctypes.c_float),
        ("mask", Mask),
        ("lse", ctypes.c_void_p),
        ("lse_batch_stride", ctypes.c_int64),
        ("lse_head_stride", ctypes.c_int64),
        ("lse_token_stride", ctypes.c_int64),
        ("qk_granularity", ctypes.c_int32),
        ("qk_precision", ctypes.c_int32),
        ("qk_sharp_threshold", ctypes.c_float),
        ("pv_precision", ctypes.c_int32),
        ("pv_accum", ctypes.c_int32),
        ("smooth_k", ctypes.c_int32),
        ("smooth_v", ctypes.c_int32),
        ("num_threads", ctypes.c_int32),
        # Appended after ABI 1's first layout (sageattn.h).
        ("check_seqlens", ctypes.c_int32),
    ]


class Data(ctypes.Structure):
    """sageattn_data: a plan's run's pointers."""

    _fields_ = [
        ("q", ctypes.c_void_p),
        ("k", ctypes.c_void_p),
        ("v", ctypes.c_void_p),
        ("out", ctypes.c_void_p),
        ("mask", ctypes.c_void_p),
        ("lse", ctypes.c_void_p),
        ("cu_seqlens_q", ctypes.c_void_p),
        ("cu_seqlens_kv", ctypes.c_void_p),
    ]


class BuildInfo(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("abi_version", ctypes.c_uint32),
        ("version", ctypes.c_char_p),
        ("backends", ctypes.c_uint32),
        ("cuda_runtime_version", ctypes.c_int32),
        ("num_cuda_archs", ctypes.c_int32),
        ("cuda_archs", ctypes.c_int32 * 32),
        ("max_head_dim", ctypes.c_int32),
        ("pv_precisions", ctypes.c_uint32),
        ("qk_granularities", ctypes.c_uint32),
        ("kernel_families", ctypes.c_char_p),
    ]


# A newer library may have appended fields to its structs, and its init
# functions clear sizeof(its struct) bytes. The padding keeps those writes
# inside memory we own; we then tell the library our own, smaller size.
_SLACK = 1024


class _ProblemBuffer(ctypes.Structure):
    _fields_ = [("p", Problem), ("_slack", ctypes.c_ubyte * _SLACK)]


class _BuildInfoBuffer(ctypes.Structure):
    _fields_ = [("info", BuildInfo), ("_slack", ctypes.c_ubyte * _SLACK)]


# ---------------------------------------------------------------- exceptions


class SageAttnError(Exception):
    """Base of the errors the library reports; `status` is the C status code,
    `status_name` its name and `detail` the library's message."""

    def __init__(self, status: int, status_name: str, detail: str, context: str = ""):
        self.status = status
        self.status_name = status_name
        self.detail = detail
        prefix = f"{context}: " if context else ""
        super().__init__(f"{prefix}{status_name}: {detail}" if detail else f"{prefix}{status_name}")


class InvalidProblemError(SageAttnError, ValueError):
    """The problem is invalid (dtype, shape, stride, alignment, option...)."""


class UnsupportedError(SageAttnError, NotImplementedError):
    """Valid, but this build of the library or this device cannot run it."""


class LibraryError(SageAttnError, RuntimeError):
    """ABI mismatch, CUDA failure, out of memory or an internal error."""


_VALUE_ERRORS = frozenset(
    (
        ERROR_NULL_POINTER,
        ERROR_INVALID_DTYPE,
        ERROR_INVALID_SHAPE,
        ERROR_INVALID_HEAD_DIM,
        ERROR_INVALID_HEADS,
        ERROR_INVALID_STRIDE,
        ERROR_OVERFLOW,
        ERROR_MISALIGNED,
        ERROR_INVALID_SEQLENS,
        ERROR_INVALID_MASK,
        ERROR_INVALID_OPTION,
        ERROR_INVALID_SCALE,
        ERROR_WORKSPACE_TOO_SMALL,
    )
)


def error_for(status: int, context: str = "") -> SageAttnError:
    """The exception for a failed call; reads sageattn_last_error(), so call it
    on the failing thread before any other library call."""
    detail = _last_error().decode("utf-8", "replace")
    name = _status_name(status).decode("ascii", "replace")
    if status in _VALUE_ERRORS:
        cls = InvalidProblemError
    elif status == ERROR_UNSUPPORTED:
        cls = UnsupportedError
    else:
        cls = LibraryError
    return cls(status, name, detail, context)


# ------------------------------------------------------------------- loading


def _library_names() -> tuple[str, ...]:
    if sys.platform == "win32":
        return ("sageattn.dll",)
    if sys.platform == "darwin":
        return ("libsageattn.dylib",)
    return ("libsageattn.so",)


def _candidates() -> list[str]:
    env = os.environ.get("SAGEATTN_LIBRARY")
    if env:
        # An explicit choice is never second-guessed by a silent fallback.
        return [env]
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib")
    return [os.path.join(here, name) for name in _library_names()]


def _load() -> tuple[ctypes.CDLL, str]:
    tried = _candidates()
    path = next((p for p in tried if os.path.isfile(p)), None)
    if path is None:
        how = (
            "SAGEATTN_LIBRARY does not name an existing file"
            if os.environ.get("SAGEATTN_LIBRARY")
            else f"no {_library_names()[0]} in the package folder (set SAGEATTN_LIBRARY to the library's path)"
        )
        raise ImportError(f"sageattention: cannot load libsageattn: {how}; tried: {', '.join(tried)}")
    if sys.platform == "win32":
        return _load_windows(path), path
    try:
        return ctypes.CDLL(path), path
    except OSError as e:
        raise ImportError(f"sageattention: cannot load libsageattn from {path}: {e}") from e


# ------------------------------------------------------------ Windows loading
#
# Since Python 3.8 a DLL's dependencies are looked for in its own folder,
# Python's folder, System32 and the folders given to os.add_dll_directory, not
# on PATH; and Windows names no culprit: "[WinError 126] The specified module
# could not be found" whether the DLL itself or one it needs is missing. The
# wheel's sageattn.dll needs nothing beyond Windows (the CUDA and C++ runtimes
# are linked in, the driver's nvcuda.dll is opened when a CUDA problem first
# runs), but a build of one's own may import the CUDA runtime DLL or the Visual
# C++ runtime: the loader reads what the DLL imports and says which is missing.

_ERROR_MOD_NOT_FOUND = 126
_ERROR_PROC_NOT_FOUND = 127
_ERROR_BAD_EXE_FORMAT = 193
_ERROR_DLL_INIT_FAILED = 1114

# Directories added with os.add_dll_directory, kept for the life of the process.
_dll_directories: list = []


def _cuda_bin_dirs() -> list[str]:
    """The CUDA toolkit's DLL folders under CUDA_PATH: bin, and bin\\x64 where a toolkit keeps them there."""
    root = os.environ.get("CUDA_PATH")
    if not root:
        return []
    return [d for d in (os.path.join(root, "bin", "x64"), os.path.join(root, "bin")) if os.path.isdir(d)]


def _dll_hint(name: str) -> str:
    low = name.lower()
    if low.startswith("cudart64_"):
        major = low[len("cudart64_") :].split(".")[0].split("_")[0]
        return (
            f"the CUDA {major} runtime: this build links it as a DLL (the wheels link it in); install the CUDA "
            f"{major} toolkit and set CUDA_PATH to it, or build with CMAKE_CUDA_RUNTIME_LIBRARY=Static (the default)"
        )
    if low == "nvcuda.dll":
        return "the NVIDIA driver's library: install the NVIDIA driver"
    if low.startswith(("vcruntime140", "msvcp140", "concrt140")):
        return "the Microsoft Visual C++ 2015-2022 runtime (x64): install the Visual C++ Redistributable"
    return "a DLL it depends on"


def _searched(folder: str) -> str:
    dirs = [folder, os.path.dirname(sys.executable), "System32"] + [str(getattr(d, "path", d)) for d in _dll_directories]
    return ", ".join(dict.fromkeys(dirs))


def _dependency_error(folder: str, name: str):
    """None when Windows can load the DLL `name` as sageattn.dll's loader would, else the OSError."""
    low = name.lower()
    if low.startswith(("api-ms-win-", "ext-ms-")):
        return None  # API sets: resolved by Windows itself, not files
    if os.path.isfile(os.path.join(folder, name)):
        return None
    try:
        ctypes.CDLL(name)
    except OSError as e:
        return e
    return None


def _python_bits() -> int:
    return 8 * ctypes.sizeof(ctypes.c_void_p)


def _explain_windows(path: str, error: OSError) -> str:
    from . import _pe

    folder = os.path.dirname(os.path.abspath(path))
    code = getattr(error, "winerror", None)
    try:
        info = _pe.read_file(path)
    except (OSError, _pe.PEError) as e:
        return f"it is not a Windows DLL ({e}); Windows said: {error}"
    python_bits = _python_bits()
    if not info.is_dll:
        return f"it is an executable for {_pe.machine_name(info.machine)}, not a DLL"
    if info.machine != _pe.MACHINE_AMD64:
        return f"it is a DLL for {_pe.machine_name(info.machine)}; this {python_bits}-bit Python needs an x64 DLL"
    if python_bits != 64:
        return f"it is a 64-bit (x64) DLL and this Python is {python_bits}-bit: use a 64-bit Python"
    if code == _ERROR_MOD_NOT_FOUND:
        missing, broken = [], []
        for dll in info.imports:
            e = _dependency_error(folder, dll)
            if e is None:
                continue
            if getattr(e, "winerror", None) == _ERROR_MOD_NOT_FOUND:
                missing.append(f"{dll} ({_dll_hint(dll)})")
            else:
                broken.append(f"{dll} ({e})")
        if missing:
            return (
                f"it needs {', '.join(missing)}, which Windows cannot find in {_searched(folder)}"
                " (PATH is not searched for a DLL's dependencies since Python 3.8)"
            )
        if broken:
            return f"a DLL it imports cannot be loaded: {'; '.join(broken)}"
        return (
            f"Windows reports a missing DLL, yet every DLL it imports ({', '.join(info.imports) or 'none'}) "
            "loads: one of theirs is missing"
        )
    if code == _ERROR_PROC_NOT_FOUND:
        lacking = []
        for dll, functions in info.imports.items():
            if _dependency_error(folder, dll) is not None:
                continue
            try:
                lib = ctypes.CDLL(os.path.join(folder, dll) if os.path.isfile(os.path.join(folder, dll)) else dll)
            except OSError:
                continue
            gone = [f for f in functions if not f.startswith("#") and not hasattr(lib, f)]
            if gone:
                too_old = (
                    "the NVIDIA driver is too old for this build: update it"
                    if dll.lower() == "nvcuda.dll"
                    else f"that {dll} is older than the one it was built against"
                )
                lacking.append(f"{dll} has no {', '.join(gone[:5])}: {too_old}")
        if lacking:
            return "; ".join(lacking)
        return f"a function it imports is missing from a DLL it uses ({error})"
    if code == _ERROR_BAD_EXE_FORMAT:
        return f"Windows does not take it for a valid x64 DLL ({error}); reinstall the wheel"
    if code == _ERROR_DLL_INIT_FAILED:
        return f"its initialisation failed ({error})"
    return str(error)


def _load_windows(path: str) -> ctypes.CDLL:
    from . import _pe

    folder = os.path.dirname(os.path.abspath(path))
    dirs = [folder]
    try:
        imports = _pe.read_file(path).imports
    except (OSError, _pe.PEError):
        imports = {}
    if any(dll.lower().startswith("cudart64_") for dll in imports):
        # A build linked to the CUDA runtime DLL finds it where the toolkit put it,
        # as it did through PATH before Python 3.8.
        dirs += _cuda_bin_dirs()
    for d in dirs:
        if not any(str(getattr(h, "path", h)) == d for h in _dll_directories):
            _dll_directories.append(os.add_dll_directory(d))
    try:
        return ctypes.CDLL(path)
    except OSError as e:
        raise ImportError(f"sageattention: cannot load {path}: {_explain_windows(path, e)}") from e


def _bind(lib: ctypes.CDLL, path: str, name: str, restype, argtypes):
    try:
        fn = getattr(lib, name)
    except AttributeError as e:
        raise ImportError(f"sageattention: {path} has no symbol {name}: it is not libsageattn, or too old") from e
    fn.restype = restype
    fn.argtypes = argtypes
    return fn


_lib, library_path = _load()

_vp = ctypes.c_void_p
_abi_version = _bind(_lib, library_path, "sageattn_abi_version", ctypes.c_int32, [])
_version = _bind(_lib, library_path, "sageattn_version", ctypes.c_char_p, [])
_build_info_init = _bind(_lib, library_path, "sageattn_build_info_init", None, [_vp])
_get_build_info = _bind(_lib, library_path, "sageattn_get_build_info", ctypes.c_int32, [_vp])
_status_name = _bind(_lib, library_path, "sageattn_status_name", ctypes.c_char_p, [ctypes.c_int32])
_status_string = _bind(_lib, library_path, "sageattn_status_string", ctypes.c_char_p, [ctypes.c_int32])
_last_error = _bind(_lib, library_path, "sageattn_last_error", ctypes.c_char_p, [])
# The hot-path functions take the problem's address as a plain integer: the
# cheapest argument conversion ctypes has.
problem_init = _bind(_lib, library_path, "sageattn_problem_init", None, [_vp])
check = _bind(_lib, library_path, "sageattn_check", ctypes.c_int32, [_vp])
workspace_size = _bind(_lib, library_path, "sageattn_workspace_size", ctypes.c_int32, [_vp, _vp])
forward = _bind(_lib, library_path, "sageattn_forward", ctypes.c_int32, [_vp, _vp, ctypes.c_size_t, _vp])


def _bind_optional(name: str, restype, argtypes):
    """A function a library of this ABI may lack (added later in it): None where it does."""
    return _bind(_lib, library_path, name, restype, argtypes) if hasattr(_lib, name) else None


# Plans (sageattn.h): a problem validated and prepared once, run on each call's pointers.
plan_create = _bind_optional("sageattn_plan_create", ctypes.c_int32, [_vp, _vp])
plan_workspace_size = _bind_optional("sageattn_plan_workspace_size", ctypes.c_int32, [_vp, _vp, _vp])
plan_forward = _bind_optional("sageattn_plan_forward", ctypes.c_int32, [_vp, _vp, _vp, ctypes.c_size_t, _vp])
plan_destroy = _bind_optional("sageattn_plan_destroy", None, [_vp])


def _check_abi() -> None:
    found = _abi_version()
    if found != ABI_VERSION:
        raise ImportError(
            f"sageattention: {library_path} speaks ABI version {found}; this package speaks {ABI_VERSION}"
        )
    buf = _ProblemBuffer()
    problem_init(ctypes.addressof(buf))
    lib_size = buf.p.struct_size
    ours = ctypes.sizeof(Problem)
    if lib_size < ours or lib_size > ours + _SLACK:
        raise ImportError(
            f"sageattention: {library_path} has a sageattn_problem of {lib_size} bytes; "
            f"this package's mirror of it is {ours} bytes (ABI {ABI_VERSION})"
        )
    # Spot-check that the defaults land where our field offsets say they do.
    p = buf.p
    if p.abi_version != ABI_VERSION or p.smooth_k != 1 or p.algorithm != ALGORITHM_QUANTIZED or p.scale != 0.0:
        raise ImportError(
            f"sageattention: {library_path}'s sageattn_problem_init wrote defaults at offsets this package "
            "does not expect: the struct layouts differ"
        )


_check_abi()


def version() -> str:
    """The library's version string, "X.Y.Z"."""
    return _version().decode()


def status_name(status: int) -> str:
    return _status_name(status).decode()


def status_string(status: int) -> str:
    return _status_string(status).decode()


def build_info() -> dict:
    """What this build of the library contains, as a plain dict."""
    buf = _BuildInfoBuffer()
    _build_info_init(ctypes.addressof(buf))
    status = _get_build_info(ctypes.addressof(buf))
    if status != SUCCESS:
        raise error_for(status, "sageattn_get_build_info")
    info = buf.info
    return {
        "version": (info.version or b"").decode(),
        "abi_version": info.abi_version,
        "library_path": library_path,
        "backends": [n for bit, n in ((BACKEND_CPU, "cpu"), (BACKEND_CUDA, "cuda")) if info.backends & bit],
        "cuda_runtime_version": info.cuda_runtime_version,
        "cuda_archs": list(info.cuda_archs[: max(0, min(32, info.num_cuda_archs))]),
        "max_head_dim": info.max_head_dim,
        "pv_precisions": [n for bit, n in ((PV_FP8, "fp8"), (PV_FP16, "fp16")) if info.pv_precisions & (1 << bit)],
        "qk_granularities": [
            n
            for bit, n in ((QK_PER_THREAD, "per_thread"), (QK_PER_WARP, "per_warp"), (QK_PER_BLOCK, "per_block"))
            if info.qk_granularities & (1 << bit)
        ],
        "kernel_families": [f for f in (info.kernel_families or b"").decode().split(",") if f],
    }


# ------------------------------------------------------- per-thread problem

_tls = threading.local()
_PROBLEM_SIZE = ctypes.sizeof(Problem)


class ThreadProblem:
    """One thread's reusable problem struct (padded, see _SLACK) and the
    out-parameter of sageattn_workspace_size, with their addresses."""

    __slots__ = ("addr", "buffer", "p", "size", "size_addr")

    def __init__(self):
        self.buffer = _ProblemBuffer()
        self.p = self.buffer.p
        self.addr = ctypes.addressof(self.buffer)
        self.size = ctypes.c_size_t(0)
        self.size_addr = ctypes.addressof(self.size)


def thread_problem() -> ThreadProblem:
    """This thread's problem, reset to the library's defaults
    (sageattn_problem_init) and sized as our mirror of the struct."""
    try:
        tp = _tls.problem
    except AttributeError:
        tp = _tls.problem = ThreadProblem()
    problem_init(tp.addr)
    tp.p.struct_size = _PROBLEM_SIZE
    return tp
