"""tests/wheel/check_wheel.py's Windows checks on wheels written by the test:
the DLL's exports must be sageattn.h's functions, its imports Windows' own."""

import os
import sys
import zipfile

import pytest

from pe_helpers import I386, make_pe

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "wheel"))
import check_wheel  # noqa: E402

API = sorted(check_wheel.api_functions())
SYSTEM = {"KERNEL32.dll": ["GetLastError"], "msvcrt.dll": ["malloc"], "api-ms-win-crt-runtime-l1-1-0.dll": ["_initterm"]}


def _wheel(tmp_path, dll=None, extra=(), platform="win_amd64", version="2.2.0.0.1.0+cu13", library="sageattn.dll"):
    path = tmp_path / f"sageattention-{version}-py3-none-{platform}.whl"
    info = f"sageattention-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: sageattention\nVersion: {version}\nRequires-Dist: torch>=2.4\n")
        z.writestr(f"{info}/WHEEL", f"Wheel-Version: 1.0\nTag: py3-none-{platform}\n")
        z.writestr("sageattention/__init__.py", "")
        z.writestr("sageattention/_lib.py", "")
        z.writestr("sageattention/_version.py", f'__version__ = "{version}"\n')
        z.writestr("sageattention/_api_version.py", 'API_VERSION = "2.2.0"\n')
        z.writestr(f"sageattention/lib/{library}", dll if dll is not None else make_pe(SYSTEM, API))
        for name in extra:
            z.writestr(name, b"")
    return str(path)


def test_api_functions_come_from_the_header():
    assert "sageattn_forward" in API and "sageattn_last_error" in API and len(API) == 15


def test_a_good_windows_wheel_passes(tmp_path, capsys):
    assert check_wheel.check(_wheel(tmp_path), "cu13") == []
    assert "imports KERNEL32.dll, msvcrt.dll, api-ms-win-crt-runtime-l1-1-0.dll; exports 15 functions" in capsys.readouterr().out


@pytest.mark.parametrize(
    "dll, why",
    [
        ("cudart64_13.dll", "the CUDA runtime must be linked in statically"),
        ("nvcuda.dll", "the driver must be opened at run time"),
        ("MSVCP140.dll", "the Visual C++ runtime must be linked in"),
        ("VCRUNTIME140.dll", "the Visual C++ runtime must be linked in"),
        ("libstdc++-6.dll", "the MinGW runtime must be linked in"),
        ("torch_cpu.dll", "it is not part of Windows"),
    ],
)
def test_imports_beyond_windows_fail(tmp_path, dll, why):
    errors = check_wheel.check(_wheel(tmp_path, make_pe({**SYSTEM, dll: ["f"]}, API)), None)
    assert len(errors) == 1 and errors[0].startswith(f"sageattention/lib/sageattn.dll imports {dll}: {why}"), errors


def test_delay_loaded_dlls_are_checked_too(tmp_path):
    errors = check_wheel.check(_wheel(tmp_path, make_pe(SYSTEM, API, delay_imports=["cudart64_12.dll"])), None)
    assert errors == ["sageattention/lib/sageattn.dll imports cudart64_12.dll: the CUDA runtime must be linked in statically"]


def test_exports_must_match_the_header(tmp_path):
    errors = check_wheel.check(_wheel(tmp_path, make_pe(SYSTEM, API[1:] + ["internal_helper"])), None)
    assert f"sageattention/lib/sageattn.dll does not export ['{API[0]}']" in errors
    assert "sageattention/lib/sageattn.dll exports ['internal_helper'], which sageattn.h does not declare" in errors


def test_x86_dll_or_exe_fails(tmp_path):
    errors = check_wheel.check(_wheel(tmp_path, make_pe(SYSTEM, API, machine=I386, pe32=True)), None)
    assert errors == ["sageattention/lib/sageattn.dll: a DLL for x86 (32-bit); expected an x64 DLL"]
    errors = check_wheel.check(_wheel(tmp_path, make_pe(SYSTEM, API, dll=False)), None)
    assert errors == ["sageattention/lib/sageattn.dll: not a DLL for x64; expected an x64 DLL"]


def test_not_a_pe_fails(tmp_path):
    errors = check_wheel.check(_wheel(tmp_path, b"\x7fELF not a DLL"), None)
    assert errors == ["sageattention/lib/sageattn.dll: no MZ header: not a Windows executable or DLL"]


def test_wrong_name_and_install_leftovers_fail(tmp_path):
    errors = check_wheel.check(
        _wheel(tmp_path, library="libsageattn.dll", extra=["sageattention/lib/sageattn.lib", "sageattention/lib/sageattn.exp"]),
        None,
    )
    assert "missing sageattention/lib/sageattn.dll" in errors
    assert "unexpected file sageattention/lib/sageattn.lib" in errors
    assert "unexpected file sageattention/lib/sageattn.exp" in errors
    assert "unexpected library sageattention/lib/libsageattn.dll (a windows wheel carries sageattention/lib/sageattn.dll)" in errors


def test_unknown_platform_fails(tmp_path):
    errors = check_wheel.check(_wheel(tmp_path, platform="macosx_14_0_arm64"), None)
    assert errors == [
        "sageattention-2.2.0.0.1.0+cu13-py3-none-macosx_14_0_arm64.whl: platform 'macosx_14_0_arm64': "
        "expected linux_x86_64, linux_aarch64 or win_amd64"
    ]


def test_label_is_checked_on_windows_too(tmp_path):
    assert check_wheel.check(_wheel(tmp_path), "cu12") == ["version '2.2.0.0.1.0+cu13': expected the label +cu12"]
