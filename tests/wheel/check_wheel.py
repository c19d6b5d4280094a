#!/usr/bin/env python3
"""Static checks of a built sageattention wheel (no install, no torch needed).

    python3 tests/wheel/check_wheel.py WHEEL [--label cu13|cpu] [--auditwheel]

- the tag is py3-none-<platform> (one wheel for every CPython >= 3.9);
- the version carries a local label (+cuXX or +cpu), the same in the file
  name, the METADATA and sageattention/_version.py; with --label, that label;
  before the label, the SageAttention API version of the wheel's
  sageattention/_api_version.py, then the library's release X.Y.Z;
- the package holds sageattention/lib/libsageattn.so and nothing of the C/C++
  install (no headers, no CMake package, no executables, no versioned .so copies);
- libsageattn.so needs nothing at run time beyond glibc, libstdc++ and libgcc
  (its DT_NEEDED entries, read from the ELF dynamic section): the CUDA runtime
  is linked in statically, the driver (libcuda) is opened at run time, and
  neither libcudart nor anything of PyTorch may appear;
- with --auditwheel: `auditwheel show` finds no external library to graft.

Exits non-zero, naming every failed check.
"""

from __future__ import annotations

import argparse
import email.parser
import json
import re
import struct
import subprocess
import sys
import zipfile
from pathlib import PurePosixPath

# glibc (with the loader), libstdc++ and libgcc: present on every Linux system.
ALLOWED_NEEDED = re.compile(
    r"^(libc|libm|libdl|librt|libpthread|libstdc\+\+|libgcc_s|ld-linux-x86-64|ld-linux-aarch64)\.so(\.[0-9]+)*$"
)
LIBRARY = "sageattention/lib/libsageattn.so"


def elf_needed(data: bytes) -> tuple[list[str], str | None]:
    """DT_NEEDED names and DT_SONAME of a 64-bit little-endian ELF shared object."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError("not a 64-bit little-endian ELF file")
    (e_shoff,) = struct.unpack_from("<Q", data, 0x28)
    e_shentsize, e_shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = []
    for i in range(e_shnum):
        off = e_shoff + i * e_shentsize
        sh_type, _flags, _addr, sh_offset, sh_size, sh_link = struct.unpack_from(
            "<IQQQQI", data, off + 4
        )
        sections.append((sh_type, sh_offset, sh_size, sh_link))
    SHT_DYNAMIC = 6
    dynamic = [s for s in sections if s[0] == SHT_DYNAMIC]
    if not dynamic:
        raise ValueError("no dynamic section")
    _t, dyn_off, dyn_size, strtab_index = dynamic[0]
    _t2, str_off, _str_size, _l = sections[strtab_index]

    def string_at(i: int) -> str:
        end = data.index(b"\0", str_off + i)
        return data[str_off + i : end].decode()

    needed, soname = [], None
    DT_NULL, DT_NEEDED, DT_SONAME = 0, 1, 14
    for off in range(dyn_off, dyn_off + dyn_size, 16):
        tag, val = struct.unpack_from("<qQ", data, off)
        if tag == DT_NULL:
            break
        if tag == DT_NEEDED:
            needed.append(string_at(val))
        elif tag == DT_SONAME:
            soname = string_at(val)
    return needed, soname


def check_auditwheel(wheel_path: str) -> list[str]:
    """`auditwheel show --json`: the wheel must need no library outside the manylinux policy."""
    run = subprocess.run(
        [sys.executable, "-m", "auditwheel", "show", "--json", wheel_path],
        check=False,
        capture_output=True,
        text=True,
    )
    if run.returncode != 0:
        return [
            f"auditwheel show failed ({run.returncode}): {run.stderr.strip() or run.stdout.strip()}"
        ]
    r = json.loads(run.stdout)
    if r.get("error"):
        return [f"auditwheel: {r['error']}"]
    if r.get("external_libs"):
        return [
            f"auditwheel: the wheel needs external libraries {sorted(r['external_libs'])}"
        ]
    print(f"auditwheel: no external libraries; consistent with {r['overall_tag']}")
    return []


def check(wheel_path: str, label: str | None) -> list[str]:
    errors: list[str] = []
    name = PurePosixPath(wheel_path).name
    m = re.fullmatch(r"sageattention-([^-]+)-py3-none-([^-]+)\.whl", name)
    if not m:
        return [
            f"{name}: not a sageattention-<version>-py3-none-<platform>.whl file name"
        ]
    version = m.group(1)
    lm = re.fullmatch(r"[0-9]+(?:\.[0-9]+)*\+(cu[0-9]+|cpu)", version)
    if not lm:
        errors.append(f"version {version!r} has no +cuXX / +cpu local label")
    elif label is not None and lm.group(1) != label:
        errors.append(f"version {version!r}: expected the label +{label}")

    with zipfile.ZipFile(wheel_path) as z:
        names = z.namelist()
        meta_name = next((n for n in names if n.endswith(".dist-info/METADATA")), None)
        if meta_name is None:
            errors.append("no METADATA")
        else:
            meta = email.parser.Parser().parsestr(z.read(meta_name).decode())
            if meta["Version"] != version:
                errors.append(
                    f"METADATA Version {meta['Version']!r} != file name version {version!r}"
                )
            requires = meta.get_all("Requires-Dist") or []
            if not any(r.replace(" ", "").startswith("torch>=2.4") for r in requires):
                errors.append(f"METADATA Requires-Dist {requires} lacks torch>=2.4")
        wheel_meta = next((n for n in names if n.endswith(".dist-info/WHEEL")), None)
        if wheel_meta is not None:
            tags = re.findall(r"^Tag: (.+)$", z.read(wheel_meta).decode(), re.MULTILINE)
            if not tags or any(not t.startswith("py3-none-") for t in tags):
                errors.append(f"WHEEL tags {tags}: expected py3-none-<platform> only")
        if "sageattention/_version.py" in names:
            text = z.read("sageattention/_version.py").decode()
            vm = re.search(r'__version__ = "([^"]+)"', text)
            if not vm or vm.group(1) != version:
                errors.append(
                    f"sageattention/_version.py says {vm and vm.group(1)!r}, the wheel is {version!r}"
                )
        else:
            errors.append("no sageattention/_version.py")
        # The version is the SageAttention API the package implements, then the
        # library's release X.Y.Z, then the label (docs/INSTALL.md).
        if "sageattention/_api_version.py" in names:
            text = z.read("sageattention/_api_version.py").decode()
            am = re.search(r'^API_VERSION = "([0-9]+\.[0-9]+\.[0-9]+)"$', text, re.MULTILINE)
            if not am:
                errors.append("sageattention/_api_version.py has no API_VERSION line")
            elif not re.fullmatch(rf"{re.escape(am.group(1))}\.[0-9]+\.[0-9]+\.[0-9]+\+[a-z0-9]+", version):
                errors.append(f"version {version!r} is not <API {am.group(1)}>.<library X.Y.Z>+<label>")
        else:
            errors.append("no sageattention/_api_version.py")
        for required in ("sageattention/__init__.py", "sageattention/_lib.py", LIBRARY):
            if required not in names:
                errors.append(f"missing {required}")
        for n in names:
            top = n.split("/", 1)[0]
            if top.endswith(".dist-info"):
                continue
            if top != "sageattention":
                errors.append(f"unexpected top-level entry {n}")
            elif n.endswith((".h", ".hpp", ".cmake", ".a")) or re.search(
                r"\.so\.[0-9]", n
            ):
                errors.append(f"unexpected file {n}")
        if LIBRARY in names:
            try:
                needed, soname = elf_needed(z.read(LIBRARY))
            except ValueError as e:
                errors.append(f"{LIBRARY}: {e}")
            else:
                print(f"{LIBRARY}: SONAME {soname}, DT_NEEDED {', '.join(needed)}")
                bad = [n for n in needed if not ALLOWED_NEEDED.match(n)]
                if bad:
                    errors.append(
                        f"{LIBRARY} needs {bad}: only glibc, libstdc++ and libgcc are allowed"
                    )
                if soname != "libsageattn.so":
                    errors.append(
                        f"{LIBRARY} has SONAME {soname!r}, expected 'libsageattn.so'"
                    )
    return errors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("wheel")
    ap.add_argument(
        "--label", help="the expected local version label: cu13, cu12 or cpu"
    )
    ap.add_argument(
        "--auditwheel",
        action="store_true",
        help="also run `auditwheel show --json` (needs auditwheel)",
    )
    args = ap.parse_args()
    errors = check(args.wheel, args.label)
    if args.auditwheel:
        errors += check_auditwheel(args.wheel)
    for e in errors:
        print(f"FAIL: {e}", file=sys.stderr)
    if not errors:
        print(f"ok: {PurePosixPath(args.wheel).name}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
