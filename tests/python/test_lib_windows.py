"""The loader's Windows branch, run on any OS: sys.platform, os.add_dll_directory
and ctypes.CDLL are stood in for, sageattn.dll is a PE image written by the test
(pe_helpers), and each way loading can fail must say what failed."""

import ctypes
import os
import sys
import types

import pytest

from pe_helpers import I386, make_pe
from sageattention import _lib, doctor

KERNEL32 = {"KERNEL32.dll": ["GetLastError", "LoadLibraryW"]}


def _winerror(code, text):
    e = OSError(f"[WinError {code}] {text}")
    e.winerror = code  # what an OSError carries on Windows
    return e


class FakeLib:
    def __init__(self, name, symbols=()):
        self.name = name
        for s in symbols:
            setattr(self, s, object())


@pytest.fixture
def windows(monkeypatch, tmp_path):
    """A Windows as the loader sees it. Returns an object whose `dlls` maps a DLL
    name (or sageattn.dll's path) to what loading it does: a FakeLib, or an OSError."""
    monkeypatch.setattr(_lib, "sys", types.SimpleNamespace(platform="win32", executable=r"C:\Python312\python.exe"))
    monkeypatch.setattr(_lib, "_dll_directories", [])
    monkeypatch.setattr(_lib, "_python_bits", lambda: 64)
    state = types.SimpleNamespace(dlls={}, added=[], loaded=[], folder=tmp_path / "lib")
    state.folder.mkdir()
    state.path = str(state.folder / "sageattn.dll")

    def add_dll_directory(path):
        state.added.append(path)
        return types.SimpleNamespace(path=path, close=lambda: None)

    def cdll(name, *args, **kwargs):
        state.loaded.append(name)
        # Windows resolves names case-insensitively.
        outcome = next((v for k, v in state.dlls.items() if k.lower() == str(name).lower()), None)
        if outcome is None:
            outcome = _winerror(126, "The specified module could not be found")
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(os, "add_dll_directory", add_dll_directory, raising=False)
    monkeypatch.setattr(ctypes, "CDLL", cdll)
    monkeypatch.setenv("SAGEATTN_LIBRARY", state.path)
    monkeypatch.delenv("CUDA_PATH", raising=False)

    def dll(imports=None, **kw):
        with open(state.path, "wb") as f:
            f.write(make_pe(imports if imports is not None else KERNEL32, ["sageattn_check"], **kw))

    state.write = dll
    state.dlls["KERNEL32.dll"] = FakeLib("KERNEL32.dll", ["GetLastError", "LoadLibraryW"])
    return state


def _failure(state):
    with pytest.raises(ImportError) as e:
        _lib._load()
    msg = str(e.value)
    assert msg.startswith(f"sageattention: cannot load {state.path}: ")
    return msg


def test_library_name_is_sageattn_dll(windows, monkeypatch):
    monkeypatch.delenv("SAGEATTN_LIBRARY")
    assert _lib._library_names() == ("sageattn.dll",)
    with pytest.raises(ImportError) as e:
        _lib._load()
    msg = str(e.value)
    assert "no sageattn.dll in the package folder" in msg
    assert os.path.join(os.path.dirname(_lib.__file__), "lib", "sageattn.dll") in msg


def test_loads_with_its_folder_added_to_the_dll_search(windows):
    windows.write()
    lib = FakeLib("sageattn.dll")
    windows.dlls[windows.path] = lib
    assert _lib._load() == (lib, windows.path)
    assert windows.added == [str(windows.folder)]
    assert windows.loaded == [windows.path]
    # Loading again adds no second copy of the folder.
    _lib._load()
    assert windows.added == [str(windows.folder)]


def test_cuda_runtime_dll_is_looked_for_under_cuda_path(windows, tmp_path, monkeypatch):
    windows.write({**KERNEL32, "cudart64_13.dll": ["cudaMalloc"]})
    (tmp_path / "cuda" / "bin" / "x64").mkdir(parents=True)
    monkeypatch.setenv("CUDA_PATH", str(tmp_path / "cuda"))
    windows.dlls[windows.path] = FakeLib("sageattn.dll")
    _lib._load()
    assert windows.added == [str(windows.folder), str(tmp_path / "cuda" / "bin" / "x64"), str(tmp_path / "cuda" / "bin")]


def test_cuda_path_is_not_added_for_a_dll_that_needs_no_cuda_dll(windows, tmp_path, monkeypatch):
    windows.write()
    (tmp_path / "cuda" / "bin").mkdir(parents=True)
    monkeypatch.setenv("CUDA_PATH", str(tmp_path / "cuda"))
    windows.dlls[windows.path] = FakeLib("sageattn.dll")
    _lib._load()
    assert windows.added == [str(windows.folder)]


def test_missing_cuda_runtime_dll_is_named(windows):
    windows.write({**KERNEL32, "cudart64_13.dll": ["cudaMalloc", "cudaFree"]})
    windows.dlls[windows.path] = _winerror(126, "The specified module could not be found")
    msg = _failure(windows)
    assert "it needs cudart64_13.dll (the CUDA 13 runtime" in msg
    assert "install the CUDA 13 toolkit and set CUDA_PATH" in msg
    assert "KERNEL32" not in msg
    assert str(windows.folder) in msg and "PATH is not searched" in msg


def test_missing_visual_cpp_runtime_is_named(windows):
    windows.write({**KERNEL32, "MSVCP140.dll": ["?_Xlength_error@std@@YAXPEBD@Z"], "VCRUNTIME140.dll": ["memcpy"]})
    windows.dlls["VCRUNTIME140.dll"] = FakeLib("VCRUNTIME140.dll", ["memcpy"])
    windows.dlls[windows.path] = _winerror(126, "The specified module could not be found")
    msg = _failure(windows)
    assert "it needs MSVCP140.dll (the Microsoft Visual C++ 2015-2022 runtime (x64)" in msg
    assert "VCRUNTIME140" not in msg


def test_dependency_beside_the_dll_counts_as_found(windows):
    windows.write({**KERNEL32, "helper.dll": ["f"]})
    (windows.folder / "helper.dll").write_bytes(b"")
    windows.dlls[windows.path] = _winerror(126, "The specified module could not be found")
    msg = _failure(windows)
    assert "every DLL it imports (KERNEL32.dll, helper.dll) loads: one of theirs is missing" in msg


def test_dependency_that_fails_otherwise_is_reported_with_its_error(windows):
    windows.write({**KERNEL32, "broken.dll": ["f"]})
    windows.dlls["broken.dll"] = _winerror(1114, "A dynamic link library (DLL) initialization routine failed")
    windows.dlls[windows.path] = _winerror(126, "The specified module could not be found")
    msg = _failure(windows)
    assert "a DLL it imports cannot be loaded: broken.dll ([WinError 1114]" in msg


def test_driver_too_old_names_the_missing_function(windows):
    windows.write({**KERNEL32, "nvcuda.dll": ["cuInit", "cuTensorMapEncodeTiled"]})
    windows.dlls["nvcuda.dll"] = FakeLib("nvcuda.dll", ["cuInit"])
    windows.dlls[windows.path] = _winerror(127, "The specified procedure could not be found")
    msg = _failure(windows)
    assert "nvcuda.dll has no cuTensorMapEncodeTiled: the NVIDIA driver is too old for this build: update it" in msg
    assert "cuInit" not in msg
    # The doctor recognises it and gives its driver advice.
    assert doctor._is_driver_error(msg)


def test_older_dll_than_built_against(windows):
    windows.write({**KERNEL32, "cudart64_12.dll": ["cudaMalloc", "cudaGetDriverEntryPointByVersion"]})
    windows.dlls["cudart64_12.dll"] = FakeLib("cudart64_12.dll", ["cudaMalloc"])
    windows.dlls[windows.path] = _winerror(127, "The specified procedure could not be found")
    msg = _failure(windows)
    assert "cudart64_12.dll has no cudaGetDriverEntryPointByVersion: that cudart64_12.dll is older" in msg
    assert not doctor._is_driver_error(msg)


def test_wrong_architecture(windows):
    windows.write(machine=I386, pe32=True)
    windows.dlls[windows.path] = _winerror(193, "%1 is not a valid Win32 application")
    msg = _failure(windows)
    assert "it is a DLL for x86 (32-bit); this 64-bit Python needs an x64 DLL" in msg


def test_executable_instead_of_dll(windows):
    windows.write(dll=False)
    windows.dlls[windows.path] = _winerror(193, "%1 is not a valid Win32 application")
    assert "it is an executable for x64, not a DLL" in _failure(windows)


def test_32_bit_python(windows, monkeypatch):
    windows.write()
    monkeypatch.setattr(_lib, "_python_bits", lambda: 32)
    windows.dlls[windows.path] = _winerror(193, "%1 is not a valid Win32 application")
    assert "it is a 64-bit (x64) DLL and this Python is 32-bit: use a 64-bit Python" in _failure(windows)


def test_not_a_dll_at_all(windows):
    with open(windows.path, "w") as f:
        f.write("not a DLL")
    windows.dlls[windows.path] = _winerror(193, "%1 is not a valid Win32 application")
    msg = _failure(windows)
    assert "it is not a Windows DLL (no MZ header" in msg and "WinError 193" in msg


def test_damaged_dll(windows):
    windows.write()
    with open(windows.path, "r+b") as f:
        f.truncate(0x210)  # headers intact, the import table cut off
    windows.dlls[windows.path] = _winerror(193, "%1 is not a valid Win32 application")
    assert "it is not a Windows DLL (truncated or damaged image" in _failure(windows)


def test_other_errors_are_passed_on(windows):
    windows.write()
    windows.dlls[windows.path] = _winerror(5, "Access is denied")
    assert _failure(windows).endswith("[WinError 5] Access is denied")


def test_linux_branch_is_untouched(monkeypatch, tmp_path):
    # The same fakes on Linux: no add_dll_directory, the dlopen error as it is.
    monkeypatch.setattr(_lib, "sys", types.SimpleNamespace(platform="linux", executable=sys.executable))
    bogus = tmp_path / "libsageattn.so"
    bogus.write_text("x")
    monkeypatch.setenv("SAGEATTN_LIBRARY", str(bogus))

    def dlopen(name, *args, **kwargs):
        raise OSError(f"{name}: invalid ELF header")

    monkeypatch.setattr(ctypes, "CDLL", dlopen)
    monkeypatch.delattr(os, "add_dll_directory", raising=False)
    with pytest.raises(ImportError, match="invalid ELF header"):
        _lib._load()
