#!/usr/bin/env python3
"""Static checks of a built sageattention wheel (no install, no torch needed).

    python3 tests/wheel/check_wheel.py WHEEL [--label cu13|cpu] [--auditwheel]

- the tag is py3-none-<platform> (one wheel for every CPython >= 3.9), the
  platform linux_x86_64, linux_aarch64 or win_amd64;
- the version carries a local label (+cuXX or +cpu), the same in the file
  name, the METADATA and sageattention/_version.py; with --label, that label;
  before the label, the SageAttention API version of the wheel's
  sageattention/_api_version.py, then the library's release X.Y.Z;
- the package holds the library (sageattention/lib/libsageattn.so on Linux,
  sageattention/lib/sageattn.dll on Windows) and nothing of the C/C++ install
  (no headers, no CMake package, no import or static libraries, no executables,
  no versioned .so copies);
- Linux: libsageattn.so needs nothing at run time beyond glibc, libstdc++ and
  libgcc (its DT_NEEDED entries, read from the ELF dynamic section): the CUDA
  runtime is linked in statically, the driver (libcuda) is opened at run time,
  and neither libcudart nor anything of PyTorch may appear;
- Windows: sageattn.dll is an x64 DLL that exports exactly the functions
  sageattn.h declares, and imports only DLLs of Windows itself (read from its
  PE import table): no CUDA runtime or driver DLL, no Visual C++ or MinGW
  runtime DLL (all linked in), nothing of PyTorch;
- with --auditwheel (Linux wheels): `auditwheel show` finds no external
  library to graft.

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
from pathlib import Path, PurePosixPath

# glibc (with the loader), libstdc++ and libgcc: present on every Linux system.
ALLOWED_NEEDED = re.compile(
    r"^(libc|libm|libdl|librt|libpthread|libstdc\+\+|libgcc_s|ld-linux-x86-64|ld-linux-aarch64)\.so(\.[0-9]+)*$"
)
LIBRARIES = {"linux": "sageattention/lib/libsageattn.so", "windows": "sageattention/lib/sageattn.dll"}
_ROOT = Path(__file__).resolve().parents[2]
# DLLs every Windows x64 has (the system's own; api-ms-win-* are API sets). The
# C runtime's msvcrt.dll is one; the Visual C++ runtime (vcruntime140, msvcp140)
# is not, and must be linked in (the wheel builds with the static runtime, /MT).
WINDOWS_SYSTEM_DLLS = {
    "kernel32.dll", "kernelbase.dll", "ntdll.dll", "advapi32.dll", "user32.dll", "gdi32.dll", "shell32.dll",
    "shlwapi.dll", "ole32.dll", "oleaut32.dll", "ws2_32.dll", "bcrypt.dll", "crypt32.dll", "dbghelp.dll",
    "psapi.dll", "version.dll", "setupapi.dll", "cfgmgr32.dll", "secur32.dll", "rpcrt4.dll", "msvcrt.dll",
    "ucrtbase.dll", "winmm.dll", "iphlpapi.dll",
}


def platform_of(tag_platform: str) -> str | None:
    if tag_platform.startswith(("linux_", "manylinux")):
        return "linux"
    if tag_platform == "win_amd64":
        return "windows"
    return None


def api_functions(header: Path = _ROOT / "include" / "sageattn" / "sageattn.h") -> set[str]:
    """The functions sageattn.h declares SAGEATTN_API: what the DLL must export."""
    return set(re.findall(r"^SAGEATTN_API\b[^(;]*?\b(sageattn_\w+)\s*\(", header.read_text(encoding="utf-8"), re.MULTILINE))


def _pe_module():
    """python/sageattention/_pe.py, loaded on its own (the package would load the library)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_sageattn_pe", _ROOT / "python" / "sageattention" / "_pe.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def check_dll(data: bytes, name: str = "sageattn.dll") -> list[str]:
    """The Windows library: an x64 DLL with the C ABI's exports and Windows' own imports only."""
    pe = _pe_module()
    try:
        info = pe.read(data)
    except pe.PEError as e:
        return [f"{name}: {e}"]
    errors = []
    if not info.is_dll or info.machine != pe.MACHINE_AMD64:
        errors.append(f"{name}: {'a DLL' if info.is_dll else 'not a DLL'} for {pe.machine_name(info.machine)}; expected an x64 DLL")
    print(f"{name}: imports {', '.join(info.imports) or 'nothing'}"
          f"{'; delay-loads ' + ', '.join(info.delay_imports) if info.delay_imports else ''};"
          f" exports {len(info.exports)} functions")
    for dll in list(info.imports) + list(info.delay_imports):
        low = dll.lower()
        if low.startswith(("api-ms-win-", "ext-ms-")) or low in WINDOWS_SYSTEM_DLLS:
            continue
        if low.startswith("cudart"):
            why = "the CUDA runtime must be linked in statically"
        elif low == "nvcuda.dll":
            why = "the driver must be opened at run time, so that CPU use needs no driver"
        elif low.startswith(("vcruntime", "msvcp", "concrt")):
            why = "the Visual C++ runtime must be linked in (/MT, CMAKE_MSVC_RUNTIME_LIBRARY=MultiThreaded)"
        elif low.startswith(("libstdc++", "libgcc", "libwinpthread")):
            why = "the MinGW runtime must be linked in (-static)"
        else:
            why = "it is not part of Windows"
        errors.append(f"{name} imports {dll}: {why}")
    wanted = api_functions()
    exported = set(info.exports)
    if wanted - exported:
        errors.append(f"{name} does not export {sorted(wanted - exported)}")
    if exported - wanted:
        errors.append(f"{name} exports {sorted(exported - wanted)}, which sageattn.h does not declare")
    return errors


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
    platform = platform_of(m.group(2))
    if platform is None:
        return [f"{name}: platform {m.group(2)!r}: expected linux_x86_64, linux_aarch64 or win_amd64"]
    library = LIBRARIES[platform]
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
        for required in ("sageattention/__init__.py", "sageattention/_lib.py", library):
            if required not in names:
                errors.append(f"missing {required}")
        for n in names:
            top = n.split("/", 1)[0]
            if top.endswith(".dist-info"):
                continue
            if top != "sageattention":
                errors.append(f"unexpected top-level entry {n}")
            elif n.endswith((".h", ".hpp", ".cmake", ".a", ".lib", ".exp", ".exe")) or re.search(
                r"\.so\.[0-9]", n
            ):
                errors.append(f"unexpected file {n}")
            elif n.endswith((".so", ".dll", ".pyd")) and n != library:
                errors.append(f"unexpected library {n} (a {platform} wheel carries {library})")
        if library in names and platform == "windows":
            errors += check_dll(z.read(library), library)
        elif library in names:
            try:
                needed, soname = elf_needed(z.read(library))
            except ValueError as e:
                errors.append(f"{library}: {e}")
            else:
                print(f"{library}: SONAME {soname}, DT_NEEDED {', '.join(needed)}")
                bad = [n for n in needed if not ALLOWED_NEEDED.match(n)]
                if bad:
                    errors.append(
                        f"{library} needs {bad}: only glibc, libstdc++ and libgcc are allowed"
                    )
                if soname != "libsageattn.so":
                    errors.append(
                        f"{library} has SONAME {soname!r}, expected 'libsageattn.so'"
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
        help="also run `auditwheel show --json` (Linux wheels; needs auditwheel)",
    )
    args = ap.parse_args()
    errors = check(args.wheel, args.label)
    if args.auditwheel:
        if "-win_" in PurePosixPath(args.wheel).name:
            errors.append("--auditwheel checks Linux wheels; a Windows wheel's DLL imports are checked without it")
        else:
            errors += check_auditwheel(args.wheel)
    for e in errors:
        print(f"FAIL: {e}", file=sys.stderr)
    if not errors:
        print(f"ok: {PurePosixPath(args.wheel).name}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
