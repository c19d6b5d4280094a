"""python -m sageattention.bench: the report generator, on the CPU at tiny sizes,
and exact_rows, the float64 judge the benchmark and the examples use."""

import json
import os
import subprocess
import sys

import pytest
import torch

import sageattention
from sageattention import bench

TINY = ["--device", "cpu", "--tokens", "256", "--heads", "2", "--dims", "32", "--lens", "64", "128",
        "--warmup", "0", "--iters", "1", "--acc-len", "128", "--acc-heads", "2"]


def test_report_files_and_doc_block(tmp_path, capsys):
    out = tmp_path / "report"
    assert bench.main(TINY + ["--out", str(out)]) == 0
    report = json.loads((out / "bench.json").read_text())
    assert {(r["causal"], r["len"]) for r in report["rows"]} == {(False, 64), (False, 128), (True, 64), (True, 128)}
    for r in report["rows"]:
        assert r["tops_ours"] > 0 and r["tops_default"] > 0 and r["cosine"] > 0.999
    assert {(r["inputs"], r["pv"]) for r in report["accuracy"]} >= {("sharp", "fp8"), ("k-bias", "fp16")}
    assert all(r["cosine"] > 0.998 for r in report["accuracy"])
    md = (out / "bench.md").read_text()
    assert "| d | causal | len | b | torch | ours e2e |" in md and "| sharp | fp8 |" in md
    pytest.importorskip("matplotlib", reason="matplotlib not installed: the plot is not checked")
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![TOPS against sequence length](bench.png)" in md

    # Rendered again from the JSON into a document's marked block, the rest kept.
    doc = tmp_path / "PERF.md"
    doc.write_text(f"# Perf\nbefore\n{bench._DOC_BEGIN}\nold table\n{bench._DOC_END}\nafter\n")
    again = ["--from-json", str(out / "bench.json"), "--out", str(tmp_path / "again"), "--doc", str(doc)]
    assert bench.main(again) == 0
    text = doc.read_text()
    assert "old table" not in text and text.startswith("# Perf\nbefore\n") and text.endswith("after\n")
    assert "| 32 | yes | 128 |" in text and "](again/bench.png)" in text


def test_plot_without_matplotlib_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert bench.main(TINY[:-4] + ["--no-accuracy", "--lens", "64", "--out", str(tmp_path)]) == 0
    assert "matplotlib is not installed" in capsys.readouterr().err
    assert (tmp_path / "bench.md").exists() and not (tmp_path / "bench.png").exists()


def test_doc_without_block_is_refused(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("no markers\n")
    with pytest.raises(SystemExit, match="bench:begin"):
        bench.update_doc(str(doc), "table")


def test_module_and_old_script_run():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(root, "python"), os.environ.get("PYTHONPATH", "")]))
    args = TINY[:-4] + ["--lens", "64", "--dims", "16", "--no-accuracy"]
    script = os.path.join(root, "bench", "bench.py")
    commands = ([sys.executable, "-m", "sageattention", "bench"], [sys.executable, "-m", "sageattention.bench"],
                [sys.executable, script])
    for cmd in commands:
        r = subprocess.run(cmd + args, capture_output=True, text=True, env=env, timeout=120, check=False)
        assert r.returncode == 0, r.stderr
        assert "d  16 causal len     64" in r.stdout


@pytest.mark.parametrize("case", ["plain", "causal", "gqa", "bool-mask", "additive-mask", "3d"])
def test_exact_rows_is_the_float64_reference(case):
    g = torch.Generator().manual_seed(3)
    hq, hkv = (4, 2) if case == "gqa" else (2, 2)
    q = torch.randn(2, hq, 40, 24, generator=g, dtype=torch.bfloat16)
    k, v = (torch.randn(2, hkv, 40, 24, generator=g, dtype=torch.bfloat16) for _ in range(2))
    mask = None
    if case == "bool-mask":
        mask = torch.rand(1, 1, 40, 40, generator=g) > 0.3
        mask[..., 0] = True
    elif case == "additive-mask":
        mask = torch.randn(40, 40, generator=g)
    rows = torch.tensor([0, 5, 17, 39])
    got = bench.exact_rows(q, k, v, rows, attn_mask=mask, is_causal=case == "causal", enable_gqa=case == "gqa")
    kk, vv = (t.repeat_interleave(hq // hkv, 1) for t in (k, v))
    want = sageattention.reference_attention(q, kk, vv, is_causal=case == "causal",
                                             attn_mask=None if mask is None else mask)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got.to(torch.bfloat16), want[:, :, rows], rtol=0, atol=0.008)
    if case == "3d":
        got3 = bench.exact_rows(q[0], k[0], v[0], rows)
        torch.testing.assert_close(got3, bench.exact_rows(q, k, v, rows)[0])


def test_error_stats():
    ref = torch.tensor([1.0, -2.0, 3.0, 0.5])
    s = bench.error_stats(ref, ref)
    assert s["cosine"] == pytest.approx(1.0) and s["rel_l1"] == 0 and s["psnr_db"] == float("inf")
    s = bench.error_stats(ref + 0.1, ref)
    assert s["rel_l1"] == pytest.approx(0.4 / 6.5) and s["max_abs"] == pytest.approx(0.1)
    assert s["psnr_db"] == pytest.approx(10 * torch.log10(torch.tensor(9 / 0.01)).item(), rel=1e-5)


# bench/ab.py and bench/same.py: the A/B of builds and their bit-for-bit check, on CPU
# tensors at lengths scaled down (each build in its own process, as on a GPU).
_BENCH = os.path.join(os.path.dirname(__file__), "..", "..", "bench")


def _tool(name, *args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(sageattention.__file__)),
                                                        os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, os.path.join(_BENCH, name), "--device", "cpu", *args],
                          env=env, capture_output=True, text=True, timeout=600)


def _library():
    path = sageattention.library_path
    if not path or not os.path.exists(path):
        pytest.skip("the library is not built")
    return path


def test_same_finds_a_build_that_differs(tmp_path):
    lib = _library()
    p = _tool("same.py", "--scale-down", "20", "--lib", f"a={lib}", "--lib", f"b={lib}")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "same.py: 36 same, 0 differ" in p.stdout
    assert "nan and inf d128 n1000             same" in p.stdout and ":False" in p.stdout  # the NaN rows come out NaN
    # A build that cannot load raises on every problem: each one differs, and the exit says so.
    p = _tool("same.py", "--scale-down", "20", "--lib", f"a={lib}", "--lib", f"b={tmp_path / 'missing.so'}")
    assert p.returncode == 1 and "same.py: 0 same, 36 differ" in p.stdout


def test_ab_rows_and_ratios(tmp_path):
    lib = _library()
    out = tmp_path / "ab.json"
    p = _tool("ab.py", "--scale-down", "64", "--iters", "1", "--rounds", "2", "--shapes", "d128 n1k,tiny b1 h8 n128 d64",
              "--lib", f"a={lib}", "--lib", f"b={lib}", "--expect-same", "--json", str(out))
    assert p.returncode == 0, p.stdout + p.stderr
    lines = [l for l in p.stdout.splitlines() if l.startswith(("d128 n1k", "tiny"))]
    assert len(lines) == 2 and all(l.endswith("same") for l in lines)
    rows = json.loads(out.read_text())
    assert {(r["build"], r["shape"]) for r in rows} == {(b, s) for b in "ab" for s in ("d128 n1k", "tiny b1 h8 n128 d64")}
    assert len(rows) == 2 * 2 * 2 and all(r["e2e"] > 0 and r["rest"] is None for r in rows)  # no kernels on CPU
    assert _tool("ab.py", "--shapes", "d999", "--lib", f"a={lib}", "--lib", f"b={lib}").returncode == 2
