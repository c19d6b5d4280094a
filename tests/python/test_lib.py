"""The ctypes binding: loading, ABI checks, structs, status -> exception."""

import ctypes
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

import sageattention
from sageattention import _lib

PYTHON_DIR = os.path.dirname(os.path.dirname(os.path.abspath(sageattention.__file__)))


def _import_error(library_path):
    """stderr of `import sageattention` in a fresh interpreter with SAGEATTN_LIBRARY set."""
    env = dict(os.environ, SAGEATTN_LIBRARY=str(library_path), PYTHONPATH=PYTHON_DIR)
    r = subprocess.run([sys.executable, "-c", "import sageattention"], env=env, capture_output=True, text=True)
    assert r.returncode != 0, "import succeeded but should have failed"
    assert "ImportError" in r.stderr
    return r.stderr


def test_version_and_build_info():
    info = sageattention.build_info()
    assert info["abi_version"] == 1
    # The package's version is the SageAttention API it implements, then the
    # library's release; a wheel's adds the CUDA major as a label ("2.2.0.0.1.0+cu13").
    from sageattention._api_version import API_VERSION

    assert sageattention.__version__.partition("+")[0] == f"{API_VERSION}.{info['version']}"
    assert "cpu" in info["backends"]
    assert info["max_head_dim"] == 256
    assert set(info["pv_precisions"]) <= {"fp8", "fp16"}
    assert sageattention.library_path == os.environ["SAGEATTN_LIBRARY"]


def test_struct_mirror_matches_library():
    buf = _lib._ProblemBuffer()
    _lib.problem_init(ctypes.addressof(buf))
    assert buf.p.struct_size == ctypes.sizeof(_lib.Problem)
    assert buf.p.abi_version == 1
    # Defaults documented in sageattn.h land on our field offsets.
    p = buf.p
    assert (p.device_type, p.algorithm, p.qk_granularity, p.qk_precision, p.pv_precision, p.pv_accum) == (0,) * 6
    assert (p.smooth_k, p.smooth_v, p.scale, p.causal) == (1, 0, 0.0, 0)


def test_thread_problem_is_reset_every_call():
    tp = _lib.thread_problem()
    tp.p.causal = 1
    tp.p.mask.type = 2
    tp2 = _lib.thread_problem()
    assert tp2 is tp and tp.p.causal == 0 and tp.p.mask.type == 0
    assert tp.p.struct_size == ctypes.sizeof(_lib.Problem)


@pytest.mark.parametrize("status", range(1, 19))
def test_every_status_maps_to_its_exception(status):
    err = _lib.error_for(status, "ctx")
    name = _lib.status_name(status)
    assert name.startswith("SAGEATTN_ERROR_")
    assert err.status == status and err.status_name == name and name in str(err)
    assert isinstance(err, sageattention.SageAttnError)
    if status == _lib.ERROR_UNSUPPORTED:
        assert isinstance(err, NotImplementedError) and isinstance(err, RuntimeError)
    elif status in (_lib.ERROR_ABI_MISMATCH, _lib.ERROR_DEVICE, _lib.ERROR_OUT_OF_MEMORY, _lib.ERROR_INTERNAL):
        assert isinstance(err, RuntimeError) and not isinstance(err, ValueError)
    else:
        assert isinstance(err, ValueError)


def test_error_carries_the_library_message():
    tp = _lib.thread_problem()  # dtype left UNSET on purpose
    status = _lib.workspace_size(tp.addr, tp.size_addr)
    assert status == _lib.ERROR_INVALID_DTYPE
    err = _lib.error_for(status)
    assert isinstance(err, ValueError)
    assert "SAGEATTN_ERROR_INVALID_DTYPE" in str(err) and "dtype = 0" in str(err)


def test_missing_library_names_the_paths_tried(tmp_path):
    missing = tmp_path / "nowhere" / "libsageattn.so"
    err = _import_error(missing)
    assert "does not name an existing file" in err and str(missing) in err


def test_unloadable_library_gives_the_dlopen_error(tmp_path):
    bogus = tmp_path / "libsageattn.so"
    bogus.write_text("not a shared library")
    err = _import_error(bogus)
    assert str(bogus) in err and ("ELF" in err or "invalid" in err.lower() or "too short" in err)


_STUB = r"""
#include <stdint.h>
#include <string.h>
typedef struct { uint32_t struct_size, abi_version; } head;
int32_t sageattn_abi_version(void) { return ABI; }
const char* sageattn_version(void) { return "9.9.9"; }
void sageattn_problem_init(void* p) { memset(p, 0, SIZE); ((head*)p)->struct_size = SIZE; ((head*)p)->abi_version = ABI; }
void sageattn_build_info_init(void* p) { ((head*)p)->struct_size = 8; }
int32_t sageattn_get_build_info(void* p) { return 2; }
int32_t sageattn_check(const void* p) { return 15; }
int32_t sageattn_workspace_size(const void* p, size_t* b) { return 15; }
int32_t sageattn_forward(const void* p, void* w, size_t b, void* s) { return 15; }
const char* sageattn_status_name(int32_t s) { return "X"; }
const char* sageattn_status_string(int32_t s) { return "X"; }
const char* sageattn_last_error(void) { return ""; }
"""


def _stub_library(tmp_path, abi, size):
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler to build a stub library")
    src = tmp_path / "stub.c"
    src.write_text(textwrap.dedent(_STUB))
    out = tmp_path / "libsageattn.so"
    subprocess.run([cc, "-shared", "-fPIC", f"-DABI={abi}", f"-DSIZE={size}", str(src), "-o", str(out)], check=True)
    return out


def test_abi_version_mismatch_names_both_versions(tmp_path):
    err = _import_error(_stub_library(tmp_path, abi=2, size=ctypes.sizeof(_lib.Problem)))
    assert "ABI version 2" in err and "speaks 1" in err


def test_struct_size_mismatch_names_both_sizes(tmp_path):
    small = ctypes.sizeof(_lib.Problem) - 8
    err = _import_error(_stub_library(tmp_path, abi=1, size=small))
    assert f"{small} bytes" in err and f"{ctypes.sizeof(_lib.Problem)} bytes" in err


def test_library_without_the_symbols_is_refused(tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build a stub library")
    src = tmp_path / "empty.c"
    src.write_text("int unrelated(void) { return 0; }\n")
    out = tmp_path / "libsageattn.so"
    subprocess.run([cc, "-shared", "-fPIC", str(src), "-o", str(out)], check=True)
    err = _import_error(out)
    assert "has no symbol sageattn_" in err
