"""The PE reader (sageattention/_pe.py) on images written by pe_helpers."""

import pytest

from pe_helpers import AMD64, I386, make_pe
from sageattention import _pe


def test_imports_exports_and_delay_loads():
    info = _pe.read(
        make_pe(
            {"KERNEL32.dll": ["GetLastError", "#7"], "cudart64_13.dll": ["cudaMalloc"]},
            ["sageattn_forward", "sageattn_check"],
            delay_imports=["nvcuda.dll"],
        )
    )
    assert info.machine == AMD64 and info.is_dll
    assert info.imports == {"KERNEL32.dll": ["GetLastError", "#7"], "cudart64_13.dll": ["cudaMalloc"]}
    assert info.delay_imports == ["nvcuda.dll"]
    assert info.exports == ["sageattn_check", "sageattn_forward"]


def test_pe32_executable():
    info = _pe.read(make_pe({"msvcrt.dll": ["printf", "#3"]}, machine=I386, dll=False, pe32=True))
    assert (info.machine, info.is_dll, info.imports, info.exports) == (I386, False, {"msvcrt.dll": ["printf", "#3"]}, [])
    assert _pe.machine_name(info.machine) == "x86 (32-bit)" and _pe.machine_name(0x1234) == "machine 0x1234"


def test_nothing_imported_or_exported():
    info = _pe.read(make_pe())
    assert (info.imports, info.delay_imports, info.exports) == ({}, [], [])


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\x7fELF\x02\x01", "no MZ header"),
        (b"MZ" + b"\0" * 58 + b"\x40\0\0\0" + b"XX\0\0", "no PE signature"),
        (make_pe({"A.dll": ["f"]})[:0x208], "truncated or damaged image"),
    ],
)
def test_what_is_not_a_pe_image_is_refused(data, message):
    with pytest.raises(_pe.PEError, match=message):
        _pe.read(data)
