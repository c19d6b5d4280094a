"""_lib.py retypes the C header's constants and structs for ctypes: these tests read
include/sageattn/sageattn.h and fail where the two disagree, so that a value, a field
or its type changed in one place and not the other is caught on the CPU, before any
call lands on the wrong offset or passes the wrong option."""

import ctypes
import os
import re

import pytest

from sageattention import _lib

HEADER = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "include", "sageattn", "sageattn.h"
)
PREFIX = "SAGEATTN_"

# The header's structs and their mirrors.
STRUCTS = {
    "sageattn_tensor": _lib.Tensor,
    "sageattn_mask": _lib.Mask,
    "sageattn_problem": _lib.Problem,
    "sageattn_build_info": _lib.BuildInfo,
    "sageattn_data": _lib.Data,
}
SCALARS = {
    "int32_t": ctypes.c_int32,
    "uint32_t": ctypes.c_uint32,
    "int64_t": ctypes.c_int64,
    "float": ctypes.c_float,
}


def _source() -> str:
    with open(HEADER, encoding="utf-8") as f:
        text = f.read()
    return re.sub(r"//[^\n]*", "", re.sub(r"/\*.*?\*/", "", text, flags=re.S))


def _value(expr: str) -> int:
    """An integer constant as the header writes them: 12, 1u, 1u << 3."""
    m = re.fullmatch(r"(\d+)u?(?:\s*<<\s*(\d+))?", expr.strip())
    assert m, f"sageattn.h: a constant this test cannot read: {expr!r}"
    return int(m.group(1)) << int(m.group(2) or 0)


def header_constants() -> dict:
    """Every numeric #define and enumerator of the header, without the SAGEATTN_ prefix."""
    src = _source()
    found = {}
    for name, expr in re.findall(r"^\s*#\s*define\s+" + PREFIX + r"(\w+)[ \t]+(\S[^\n]*)$", src, flags=re.M):
        if re.fullmatch(r"\d+u?", expr.strip()):
            found[name] = _value(expr)
    for body in re.findall(r"\benum\b[^{;]*\{(.*?)\}", src, flags=re.S):
        for entry in body.split(","):
            if entry.strip():
                name, _, expr = entry.partition("=")
                assert expr, f"sageattn.h: enumerator {name.strip()} has no explicit value"
                found[name.strip().removeprefix(PREFIX)] = _value(expr)
    return found


def header_struct(name: str) -> list:
    """The fields of `typedef struct name {...} name;` as (field, ctypes type)."""
    m = re.search(r"typedef\s+struct\s+" + name + r"\s*\{(.*?)\}\s*" + name + r"\s*;", _source(), flags=re.S)
    assert m, f"sageattn.h has no struct {name}"
    fields = []
    for decl in filter(None, (d.strip() for d in m.group(1).split(";"))):
        m2 = re.fullmatch(r"((?:const\s+)?\w+\s*\**)\s*(.*)", decl, flags=re.S)
        ctype, names = m2.group(1).replace(" ", ""), m2.group(2)
        for field in (n.strip() for n in names.split(",")):
            array = re.fullmatch(r"(\w+)\[(\d+)\]", field)
            field = array.group(1) if array else field
            if ctype == "constchar*":
                t = ctypes.c_char_p
            elif ctype.endswith("*"):
                t = ctypes.c_void_p
            elif ctype in SCALARS:
                t = SCALARS[ctype]
            else:
                assert ctype in STRUCTS, f"sageattn.h: {name}.{field} has a type this test does not map: {ctype}"
                t = STRUCTS[ctype]
            fields.append((field, t * int(array.group(2)) if array else t))
    return fields


def python_constants() -> dict:
    """_lib's public integer constants (upper-case names)."""
    return {n: v for n, v in vars(_lib).items() if n.isupper() and not n.startswith("_") and type(v) is int}


def test_the_header_is_read():
    constants = header_constants()
    # A parser that silently found nothing would pass every check below.
    assert constants["ABI_VERSION"] == 1 and constants["MAX_HEAD_DIM"] == 256
    assert constants["ERROR_INTERNAL"] == 18 and constants["ACCUM_FP16_FP32"] == 4 and constants["BACKEND_CUDA"] == 2
    assert len(constants) > 40
    assert [f for f, _ in header_struct("sageattn_problem")][-1] == "check_seqlens"


@pytest.mark.parametrize("name", sorted(header_constants()))
def test_every_header_constant_is_mirrored_with_its_value(name):
    value = header_constants()[name]
    assert hasattr(_lib, name), f"sageattn.h defines {PREFIX}{name} = {value}; _lib.py has no {name}"
    assert getattr(_lib, name) == value, f"{PREFIX}{name} is {value} in sageattn.h but {getattr(_lib, name)} in _lib.py"


def test_every_python_constant_is_in_the_header():
    extra = sorted(set(python_constants()) - set(header_constants()))
    assert not extra, f"_lib.py has constants sageattn.h does not define: {extra}"


@pytest.mark.parametrize("name", sorted(STRUCTS))
def test_every_struct_mirror_has_the_header_fields_in_order(name):
    ours = [(f, t) for f, t, *_ in STRUCTS[name]._fields_]
    theirs = header_struct(name)
    assert [f for f, _ in ours] == [f for f, _ in theirs], f"{name}: field names or order differ"
    for (field, mine), (_, want) in zip(ours, theirs):
        if issubclass(want, ctypes.Array):
            assert issubclass(mine, ctypes.Array) and mine._type_ is want._type_ and mine._length_ == want._length_, (
                f"{name}.{field}: {mine} in _lib.py, {want} in sageattn.h"
            )
        else:
            assert mine is want, f"{name}.{field}: {mine.__name__} in _lib.py, {want.__name__} in sageattn.h"
