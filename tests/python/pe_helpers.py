"""Small Windows PE images written from scratch, for testing the PE reader, the
Windows branch of the loader and the wheel checks on Linux: a DLL (or EXE) with
the imports and exports asked for, and nothing else."""

import struct

AMD64, I386 = 0x8664, 0x14C
_SECTION_RVA, _SECTION_FILE = 0x1000, 0x200


class _Section:
    """A bump allocator over one section: place() returns the RVA of the bytes."""

    def __init__(self):
        self.data = bytearray()

    def place(self, blob: bytes, align: int = 8) -> int:
        self.data += b"\0" * (-len(self.data) % align)
        rva = _SECTION_RVA + len(self.data)
        self.data += blob
        return rva

    def patch(self, rva: int, blob: bytes) -> None:
        at = rva - _SECTION_RVA
        self.data[at : at + len(blob)] = blob


def make_pe(imports=None, exports=(), machine=AMD64, dll=True, pe32=False, delay_imports=()) -> bytes:
    """imports: {"KERNEL32.dll": ["GetLastError", ...]}; names starting with '#' import by ordinal."""
    imports = imports or {}
    thunk = 4 if pe32 else 8
    sec = _Section()
    directories = {}

    if imports:
        descriptors = sec.place(b"\0" * 20 * (len(imports) + 1))
        for i, (name, functions) in enumerate(imports.items()):
            entries = []
            for f in functions:
                if f.startswith("#"):
                    entries.append((1 << (thunk * 8 - 1)) | int(f[1:]))
                else:
                    entries.append(sec.place(struct.pack("<H", 0) + f.encode() + b"\0", 2))
            table = sec.place(b"".join(struct.pack("<Q" if thunk == 8 else "<I", e) for e in entries + [0]))
            name_rva = sec.place(name.encode() + b"\0", 1)
            sec.patch(descriptors + 20 * i, struct.pack("<IIIII", table, 0, 0, name_rva, table))
        directories[1] = (descriptors, 20 * (len(imports) + 1))

    if delay_imports:
        descriptors = sec.place(b"\0" * 32 * (len(delay_imports) + 1))
        for i, name in enumerate(delay_imports):
            sec.patch(descriptors + 32 * i, struct.pack("<II", 1, sec.place(name.encode() + b"\0", 1)))
        directories[13] = (descriptors, 32 * (len(delay_imports) + 1))

    if exports:
        names = sorted(exports)
        name_rvas = [sec.place(n.encode() + b"\0", 1) for n in names]
        pointers = sec.place(b"".join(struct.pack("<I", r) for r in name_rvas), 4)
        directory = struct.pack("<IIHHIIIIIII", 0, 0, 0, 0, 0, 1, len(names), len(names), 0, pointers, 0)
        directories[0] = (sec.place(directory, 4), len(directory))

    raw = bytes(sec.data) + b"\0" * (-len(sec.data) % 0x200)
    opt_size = (96 if pe32 else 112) + 16 * 8
    optional = bytearray(opt_size)
    struct.pack_into("<H", optional, 0, 0x10B if pe32 else 0x20B)
    struct.pack_into("<I", optional, 92 if pe32 else 108, 16)
    for index, (rva, size) in directories.items():
        struct.pack_into("<II", optional, (96 if pe32 else 112) + 8 * index, rva, size)
    characteristics = 0x0022 | (0x2000 if dll else 0)
    coff = struct.pack("<HHIIIHH", machine, 1, 0, 0, 0, opt_size, characteristics)
    section = struct.pack("<8sIIIIIIHHI", b".rdata", len(sec.data), _SECTION_RVA, len(raw), _SECTION_FILE, 0, 0, 0, 0, 0)
    dos = bytearray(64)
    dos[:2] = b"MZ"
    struct.pack_into("<I", dos, 0x3C, 64)
    headers = bytes(dos) + b"PE\0\0" + coff + bytes(optional) + section
    assert len(headers) <= _SECTION_FILE
    return headers + b"\0" * (_SECTION_FILE - len(headers)) + raw
