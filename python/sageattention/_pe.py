"""What a Windows DLL imports and exports, read from its PE headers.

Used by the loader (_lib.py) to say which DLL or function is missing when
Windows refuses to load sageattn.dll, and by tests/wheel/check_wheel.py to
check the wheel's DLL; plain Python, so both also run on Linux. Needs no torch
and imports nothing of the package.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

MACHINE_AMD64 = 0x8664
MACHINE_I386 = 0x14C
MACHINE_ARM64 = 0xAA64
MACHINE_NAMES = {MACHINE_AMD64: "x64", MACHINE_I386: "x86 (32-bit)", MACHINE_ARM64: "ARM64"}
_FILE_DLL = 0x2000
_DIR_EXPORT, _DIR_IMPORT, _DIR_DELAY_IMPORT = 0, 1, 13


class PEError(ValueError):
    """Not a PE image, or one whose headers do not hold together."""


class PEInfo(NamedTuple):
    machine: int
    is_dll: bool
    imports: dict  # DLL name as written -> names of the functions imported from it (ordinals as "#N")
    delay_imports: list  # DLLs loaded on first use (MSVC /DELAYLOAD)
    exports: list  # exported function names


def machine_name(machine: int) -> str:
    return MACHINE_NAMES.get(machine, f"machine 0x{machine:04x}")


def read(data: bytes) -> PEInfo:
    """Parses a PE32 or PE32+ image (a DLL or an EXE) from its bytes."""
    try:
        return _read(data)
    except (struct.error, IndexError) as e:
        raise PEError(f"truncated or damaged image ({e})") from None


def _read(data: bytes) -> PEInfo:
    def u16(off):
        return _unpack("<H", data, off)

    def u32(off):
        return _unpack("<I", data, off)

    if data[:2] != b"MZ":
        raise PEError("no MZ header: not a Windows executable or DLL")
    pe = u32(0x3C)
    if data[pe : pe + 4] != b"PE\0\0":
        raise PEError("no PE signature")
    coff = pe + 4
    machine, sections, opt_size, characteristics = u16(coff), u16(coff + 2), u16(coff + 16), u16(coff + 18)
    opt = coff + 20
    magic = u16(opt)
    if magic == 0x20B:  # PE32+
        thunk, count_at, dirs_at = 8, opt + 108, opt + 112
    elif magic == 0x10B:  # PE32
        thunk, count_at, dirs_at = 4, opt + 92, opt + 96
    else:
        raise PEError(f"unknown optional header magic 0x{magic:x}")
    n_dirs = u32(count_at)
    section_table = []
    for i in range(sections):
        s = opt + opt_size + 40 * i
        vsize, vaddr, raw_size, raw_ptr = struct.unpack_from("<IIII", data, s + 8)
        section_table.append((vaddr, max(vsize, raw_size), raw_ptr, raw_size))

    def offset(rva: int) -> int:
        for vaddr, size, raw_ptr, raw_size in section_table:
            if vaddr <= rva < vaddr + size and rva - vaddr < raw_size:
                return raw_ptr + rva - vaddr
        raise PEError(f"RVA 0x{rva:x} lies in no section")

    def cstring(rva: int) -> str:
        start = offset(rva)
        end = data.find(b"\0", start)
        if end < 0:
            raise PEError("unterminated name")
        return data[start:end].decode("ascii", "replace")

    def directory(index: int) -> tuple[int, int]:
        if index >= n_dirs:
            return 0, 0
        return _unpack("<I", data, dirs_at + 8 * index), _unpack("<I", data, dirs_at + 8 * index + 4)

    imports: dict = {}
    rva, size = directory(_DIR_IMPORT)
    if rva and size:
        at = offset(rva)
        while True:
            lookup, _time, _chain, name_rva, first_thunk = struct.unpack_from("<IIIII", data, at)
            if not (lookup or name_rva or first_thunk):
                break
            functions = []
            entry = offset(lookup or first_thunk)
            while True:
                value = _unpack("<Q" if thunk == 8 else "<I", data, entry)
                if value == 0:
                    break
                if value >> (thunk * 8 - 1):  # imported by ordinal
                    functions.append(f"#{value & 0xFFFF}")
                else:
                    functions.append(cstring((value & 0x7FFFFFFF) + 2))  # skip the 2-byte hint
                entry += thunk
            imports[cstring(name_rva)] = functions
            at += 20

    delay_imports = []
    rva, size = directory(_DIR_DELAY_IMPORT)
    if rva and size:
        at = offset(rva)
        while True:
            _attrs, name_rva = struct.unpack_from("<II", data, at)
            if not name_rva:
                break
            delay_imports.append(cstring(name_rva))
            at += 32

    exports = []
    rva, size = directory(_DIR_EXPORT)
    if rva and size:
        at = offset(rva)
        n_names, names_rva = _unpack("<I", data, at + 24), _unpack("<I", data, at + 32)
        names_at = offset(names_rva) if n_names else 0
        exports = [cstring(_unpack("<I", data, names_at + 4 * i)) for i in range(n_names)]

    return PEInfo(machine, bool(characteristics & _FILE_DLL), imports, delay_imports, exports)


def read_file(path: str) -> PEInfo:
    with open(path, "rb") as f:
        return read(f.read())


def _unpack(fmt: str, data: bytes, off: int) -> int:
    return struct.unpack_from(fmt, data, off)[0]
