"""`python -m sageattention doctor`: check an installation and say what to fix.

Prints the library, ABI and wheel versions, the CUDA runtime the library was
built with, the driver, each visible GPU and whether its architecture is
compiled in, the path `sageattn` takes on it, then a short accuracy check and
(on a GPU) a small benchmark against torch's scaled_dot_product_attention.
Every problem found gets a plain sentence and what to do about it. Exit code:
0 when everything checked passed, 1 otherwise.

This module imports the package inside a try, so it still runs, and reports
why, when `import sageattention` fails; run as `python -m sageattention doctor`
it gets that error from the package, which keeps it for the doctor instead of
raising it.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import json
import os
import sys
import time

COSINE_MIN = 0.999
_DRIVER_HINT = "update the NVIDIA driver to R580+ or install the +cu12 wheel"


class Report:
    def __init__(self):
        self.data: dict = {}
        self.lines: list[tuple[str, str]] = []
        self.problems: list[str] = []
        self.notes: list[str] = []

    def add(self, key: str, label: str, value) -> None:
        self.data[key] = value
        if isinstance(value, (list, tuple)):
            shown = ", ".join(str(v) for v in value) or "(none)"
        elif value is None:
            shown = "(unknown)"
        else:
            shown = str(value)
        self.lines.append((label, shown))

    def problem(self, text: str) -> None:
        self.problems.append(text)

    def note(self, text: str) -> None:
        self.notes.append(text)


def _fmt_cuda_version(v: int | None) -> str | None:
    if not v:
        return None
    return f"{v // 1000}.{(v % 1000) // 10}"


def _driver_version() -> int | None:
    """cuDriverGetVersion from libcuda, or None when there is no driver."""
    names = ("nvcuda.dll",) if sys.platform == "win32" else ("libcuda.so.1", "libcuda.so")
    for name in names:
        try:
            lib = ctypes.CDLL(name)
            v = ctypes.c_int(0)
            if lib.cuDriverGetVersion(ctypes.byref(v)) == 0 and v.value > 0:
                return v.value
        except (OSError, AttributeError):
            continue
    return None


def _nvidia_driver_release() -> str | None:
    try:
        with open("/proc/driver/nvidia/version") as f:
            first = f.readline()
    except OSError:
        return None
    for tok in first.split():
        if tok[:1].isdigit() and "." in tok:
            return tok
    return None


def arch_coverage(cc: int, archs: list[int]) -> tuple[bool, str]:
    """Whether a GPU of compute capability `cc` (e.g. 89) can run a library
    compiled for `archs`. A heuristic: build_info lists the targets as plain
    numbers and does not say which were embedded as PTX."""
    if cc in archs:
        return True, f"sm_{cc} compiled in"
    same_major = [a for a in archs if a // 10 == cc // 10 and a < cc and a != 90]
    if same_major:
        a = max(same_major)
        return True, f"sm_{a} code runs on sm_{cc} (same major architecture)"
    lower = [a for a in archs if a < cc]
    if lower and max(archs) < cc:
        a = max(lower)
        return True, (
            f"via PTX (heuristic: assumes compute_{a} PTX is embedded and the driver JIT-compiles it; "
            "a native build for this GPU is faster)"
        )
    return False, f"sm_{cc} is not among the compiled targets ({', '.join(f'sm_{a}' for a in archs) or 'none'})"


def kernel_path(cc: int, families: str = "") -> str:
    """The kernels `sageattn` takes on a GPU of compute capability `cc`, given the
    library's kernel families (build_info)."""
    if cc == 90 and "cuda-wgmma-sm90a" in families:
        return "CUDA sm_90a wgmma kernel, INT8 Q·Kᵀ, FP8 P·V (every head_dim, 1..256)"
    if cc in (80, 87, 90):
        return "CUDA mma kernels, INT8 Q·Kᵀ, FP16 P·V"
    # 99 KB of shared memory per block: head_dim above 128 runs on one K and one V buffer there.
    if cc == 86:
        return "CUDA mma kernels, INT8 Q·Kᵀ, FP16 P·V (head_dim above 128: single K/V buffers, 99 KB a block)"
    if cc == 89 or 120 <= cc < 130:
        return "CUDA mma kernels, INT8 Q·Kᵀ, FP8 P·V (head_dim above 128: single K/V buffers, 99 KB a block)"
    return "CUDA mma kernels (P·V precision chosen by the library for this GPU)"


def _load_lib_standalone():
    """Load _lib.py on its own (it needs no torch) when the package import
    fails for want of torch, to report the library anyway."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_lib.py")
    spec = importlib.util.spec_from_file_location("_sageattn_doctor_lib", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _installed_version() -> str | None:
    """The installed distribution's version, for when the package cannot be imported."""
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("sageattention")
    except (ImportError, PackageNotFoundError):
        return None


def _is_driver_error(text: str) -> bool:
    t = text.lower()
    return (
        "insufficient driver" in t
        or "driver version is insufficient" in t
        or "driver is insufficient" in t
        or "driver is too old" in t  # the Windows loader's words for a driver's nvcuda.dll lacking a function
    )


def _library_section(rep: Report, info: dict, wheel_version: str | None) -> None:
    rep.add("library_path", "library", info.get("library_path"))
    rep.add("library_version", "library version", info.get("version"))
    rep.add("abi_version", "ABI version", info.get("abi_version"))
    rep.add("package_version", "package version", wheel_version)
    rep.add("backends", "backends", info.get("backends"))
    rep.add("cuda_runtime", "CUDA runtime (built)", _fmt_cuda_version(info.get("cuda_runtime_version")))
    rep.add("cuda_archs", "compiled SM targets", [f"sm_{a}" for a in info.get("cuda_archs", [])])
    rep.add("kernel_families", "kernel families", info.get("kernel_families"))


def _torch_section(rep: Report, torch, info: dict) -> list[tuple[int, str, int]]:
    rep.add("torch_version", "torch", torch.__version__)
    rep.add("torch_cuda", "torch CUDA", torch.version.cuda or "none (CPU-only build of torch)")
    drv = _driver_version()
    rel = _nvidia_driver_release()
    rep.add("driver_cuda_version", "driver CUDA version", _fmt_cuda_version(drv))
    if rel:
        rep.add("driver_release", "driver release", rel)
    runtime = info.get("cuda_runtime_version") or 0
    has_cuda_backend = "cuda" in info.get("backends", [])
    if drv and runtime and has_cuda_backend and drv // 1000 < runtime // 1000:
        rep.problem(
            f"The NVIDIA driver supports CUDA {_fmt_cuda_version(drv)}, older than the CUDA "
            f"{_fmt_cuda_version(runtime)} runtime the library was built with: {_DRIVER_HINT}."
        )
    gpus = []
    try:
        available = torch.cuda.is_available()
        count = torch.cuda.device_count() if available else 0
    except Exception as e:  # noqa: BLE001 - torch raises various errors here
        available, count = False, 0
        msg = str(e)
        if _is_driver_error(msg):
            rep.problem(f"CUDA cannot start because the driver is too old ({msg}): {_DRIVER_HINT}.")
        else:
            rep.problem(f"torch could not initialise CUDA ({msg}); check the driver with nvidia-smi.")
    if not available or count == 0:
        rep.add("gpus", "GPUs", [])
        rep.note("No CUDA GPU is visible to torch: sageattn runs on the CPU only (emulation, slow).")
        return gpus
    archs = info.get("cuda_archs", [])
    listed = []
    for i in range(count):
        name = torch.cuda.get_device_name(i)
        major, minor = torch.cuda.get_device_capability(i)
        cc = major * 10 + minor
        covered, how = arch_coverage(cc, archs) if has_cuda_backend else (False, "the library has no CUDA backend")
        path = kernel_path(cc, info.get("kernel_families") or "") if covered else "none (the kernels cannot run on this GPU)"
        listed.append({"index": i, "name": name, "compute_capability": f"{major}.{minor}",
                       "arch_covered": covered, "arch_detail": how, "sageattn_path": path})
        rep.lines.append((f"GPU {i}", f"{name}, compute capability {major}.{minor}"))
        rep.lines.append((f"GPU {i} arch", ("covered: " if covered else "NOT covered: ") + how))
        rep.lines.append((f"GPU {i} sageattn path", path))
        if not has_cuda_backend:
            rep.problem(
                f"GPU {i} ({name}) is present but this library was built without CUDA: "
                "install a CUDA wheel (+cu13 or +cu12), not the +cpu one."
            )
        elif not covered:
            rep.problem(
                f"GPU {i} ({name}, sm_{cc}) is not among the architectures compiled into the library: "
                f"rebuild from source with SAGEATTN_CUDA_ARCHS={cc} (see docs/INSTALL.md)."
            )
        else:
            gpus.append((i, name, cc))
    rep.data["gpus"] = listed
    return gpus


def _cosine_rel_l1(torch, out, ref) -> tuple[float, float]:
    a = out.float().flatten()
    b = ref.float().flatten()
    cos = torch.nn.functional.cosine_similarity(a, b, dim=0).item()
    rel = ((a - b).abs().sum() / b.abs().sum().clamp_min(1e-30)).item()
    return cos, rel


def _accuracy(rep: Report, torch, sa, device: str, quick: bool) -> None:
    if device == "cuda":
        shape = (1, 4, 512, 128) if quick else (2, 8, 1024, 128)
    else:
        shape = (1, 2, 128, 64) if quick else (1, 4, 256, 128)
    g = torch.Generator(device="cpu").manual_seed(0)
    q, k, v = (torch.randn(shape, generator=g, dtype=torch.float32).to(device, torch.bfloat16) for _ in range(3))
    label = f"accuracy ({device}, {'x'.join(map(str, shape))} bf16)"
    try:
        t0 = time.perf_counter()
        out = sa.sageattn(q, k, v, tensor_layout="HND", is_causal=False)
        if device == "cuda":
            torch.cuda.synchronize()
        secs = time.perf_counter() - t0
    except Exception as e:  # noqa: BLE001 - report whatever the call raised
        msg = f"{type(e).__name__}: {e}"
        rep.add("accuracy", label, {"ok": False, "error": msg})
        if _is_driver_error(msg):
            rep.problem(f"sageattn failed because the NVIDIA driver is too old ({msg}): {_DRIVER_HINT}.")
        else:
            rep.problem(f"sageattn failed on {device} ({msg}).")
        return
    ref = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float())
    cos, rel = _cosine_rel_l1(torch, out, ref)
    ok = cos >= COSINE_MIN
    rep.data["accuracy"] = {"ok": ok, "device": device, "shape": list(shape), "cosine": cos,
                            "rel_l1": rel, "seconds": secs}
    rep.lines.append((label, f"cosine {cos:.6f}, rel. L1 {rel:.4f} -> {'PASS' if ok else 'FAIL'}"))
    if not ok:
        rep.problem(
            f"The accuracy check failed (cosine {cos:.6f} < {COSINE_MIN} against float32 SDPA): "
            "the kernels give wrong results here; please report it with this output."
        )


def _bench(rep: Report, torch, sa, quick: bool) -> None:
    shape = (2, 16, 2048, 128) if quick else (4, 32, 4096, 128)
    q, k, v = (torch.randn(shape, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    fsdpa = torch.nn.functional.scaled_dot_product_attention

    def median_ms(fn, iters=20, warmup=5):
        for _ in range(warmup):
            fn()
        torch.cuda.synchronize()
        times = []
        for _ in range(iters):
            s = torch.cuda.Event(enable_timing=True)
            e = torch.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            e.synchronize()
            times.append(s.elapsed_time(e))
        times.sort()
        return times[len(times) // 2]

    label = f"benchmark ({'x'.join(map(str, shape))} bf16)"
    try:
        ours = median_ms(lambda: sa.sageattn(q, k, v, tensor_layout="HND"))
        theirs = median_ms(lambda: fsdpa(q, k, v))
    except Exception as e:  # noqa: BLE001
        rep.add("benchmark", label, {"error": f"{type(e).__name__}: {e}"})
        rep.problem(f"The benchmark failed ({type(e).__name__}: {e}).")
        return
    ratio = theirs / ours if ours > 0 else float("nan")
    rep.data["benchmark"] = {"shape": list(shape), "sageattn_ms": ours, "torch_sdpa_ms": theirs,
                             "speedup": ratio}
    rep.lines.append((label, f"sageattn {ours:.3f} ms, torch SDPA {theirs:.3f} ms, {ratio:.2f}x"))


def run(no_bench: bool = False, quick: bool = False) -> Report:
    rep = Report()
    rep.add("python", "python", sys.version.split()[0])
    sa = None
    lib = None
    try:
        import sageattention as sa

        if sa.__dict__.get("_import_error") is not None:
            # Run as `python -m sageattention`: the package kept its import
            # error for us instead of raising it (sageattention/__init__.py).
            failed, sa = sa.__dict__["_import_error"], None
            raise failed
    except ImportError as e:
        text = str(e)
        missing_torch = getattr(e, "name", None) == "torch" or "No module named 'torch'" in text
        if missing_torch:
            rep.problem("PyTorch is not installed: install it (pip install torch) with the CUDA build for your GPU.")
            try:
                lib = _load_lib_standalone()
            except ImportError as e2:
                text = str(e2)
                missing_torch = False
        if not missing_torch:
            rep.add("import_error", "import sageattention", f"FAILED: {text}")
            if "ABI version" in text or "struct layouts differ" in text or "mirror of it" in text:
                rep.problem(
                    f"The library and the Python package do not match ({text}): reinstall the wheel "
                    "(pip install --force-reinstall sageattention), or point SAGEATTN_LIBRARY at a "
                    "library built from the same source."
                )
            elif _is_driver_error(text):
                rep.problem(f"The library cannot load because the driver is too old ({text}): {_DRIVER_HINT}.")
            else:
                rep.problem(
                    f"The library cannot be loaded ({text}). If SAGEATTN_LIBRARY is set, make it name "
                    "an existing libsageattn (or unset it); otherwise reinstall the wheel."
                )
            return rep
    else:
        lib = sa._lib

    info = lib.build_info()
    _library_section(rep, info, sa.__version__ if sa is not None else _installed_version())
    if lib.ABI_VERSION != info.get("abi_version"):
        rep.problem(f"The library reports ABI {info.get('abi_version')}, the package speaks {lib.ABI_VERSION}: "
                    "reinstall the wheel so both come from one build.")
    if sa is None:
        return rep

    import torch

    gpus = _torch_section(rep, torch, info)
    if gpus:
        idx = gpus[0][0]
        with torch.cuda.device(idx):
            _accuracy(rep, torch, sa, "cuda", quick)
            if not no_bench and rep.data.get("accuracy", {}).get("ok"):
                _bench(rep, torch, sa, quick)
    else:
        _accuracy(rep, torch, sa, "cpu", quick)
    return rep


def render(rep: Report) -> str:
    width = max((len(label) for label, _ in rep.lines), default=0)
    out = ["sageattention doctor", ""]
    out += [f"{label + ':':<{width + 1}} {value}" for label, value in rep.lines]
    out.append("")
    for n in rep.notes:
        out.append(f"note: {n}")
    if rep.problems:
        out.append(f"verdict: {len(rep.problems)} problem(s) found")
        out += [f"  - {p}" for p in rep.problems]
    else:
        out.append("verdict: OK, everything checked passed")
    return "\n".join(out)


def main(argv: list[str] | None = None, prog: str = "python -m sageattention doctor",
         description: str | None = None) -> int:
    ap = argparse.ArgumentParser(prog=prog, description=description or __doc__.split("\n\n")[0])
    ap.add_argument("--no-bench", action="store_true", help="skip the benchmark against torch SDPA")
    ap.add_argument("--quick", action="store_true", help="smaller sizes for the accuracy check and benchmark")
    ap.add_argument("--json", action="store_true", help="print a machine-readable JSON object instead")
    args = ap.parse_args(argv)
    rep = run(no_bench=args.no_bench, quick=args.quick)
    ok = not rep.problems
    if args.json:
        d = dict(rep.data)
        d.update(ok=ok, problems=rep.problems, notes=rep.notes)
        print(json.dumps(d, indent=2, default=str))
    else:
        print(render(rep))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
