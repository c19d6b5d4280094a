"""Sequence parallelism (sageattention.parallel): Ulysses, ring and hybrid
attention in 2 and 4 gloo processes on the CPU (and 2 NCCL processes on two
GPUs, marked gpu), each against a float64 reference and the single-process
sageattn call on the whole sequence; the LSE merge and the sharding
conventions in-process."""

import math

import pytest
import torch

import sageattention as sa
from attn_helpers import reference
from parallel_helpers import BF16, F16, Pool, inputs
from sageattention import parallel

# --------------------------------------------------------------- the verdict

# The LSE bounds the single-device algorithm is held to (docs/ALGORITHM.md §7).
LSE_BOUND = {False: 0.02, True: 0.06}


def _errors(out, ref):
    e = (out.double() - ref).abs()
    return float(e.max()), float(e.sum() / ref.abs().sum())


def check(case, got, exact=False):
    """The parallel result against float64 and against the single-process
    call: no worse than the single-process error (blocks quantize and merge
    differently, so equal only where the same heads see the same keys)."""
    q, k, v = inputs(case)
    causal = case.get("causal", False)
    ref, ref_lse = reference(q, k, v, case.get("layout", "HND"), causal=causal)
    out, lse = torch.from_numpy(got["out"]), torch.from_numpy(got["lse"])
    single, single_lse = torch.from_numpy(got["single_out"]), torch.from_numpy(got["single_lse"])
    assert out.shape == q.shape and lse.shape == ref_lse.shape
    assert torch.isfinite(out).all() and torch.isfinite(lse).all()
    par_max, par_l1 = _errors(out, ref)
    one_max, one_l1 = _errors(single, ref)
    par_lse = float((lse.double() - ref_lse).abs().max())
    one_lse = float((single_lse.double() - ref_lse).abs().max())
    diff_l1 = float((out.double() - single.double()).abs().sum() / ref.abs().sum())
    report = (
        f"parallel: max {par_max:.4g} relL1 {par_l1:.4g} lse {par_lse:.4g}; "
        f"single: max {one_max:.4g} relL1 {one_l1:.4g} lse {one_lse:.4g}; |parallel-single| relL1 {diff_l1:.4g}"
    )
    if exact:
        assert torch.equal(out, single) and torch.equal(lse, single_lse), report
        return
    assert par_l1 <= 1.1 * one_l1, report
    assert par_max <= 2.0 * one_max + 1e-3, report
    assert par_lse <= max(LSE_BOUND[causal], 1.25 * one_lse), report
    assert diff_l1 <= 1.5 * one_l1, report  # the two differ by quantization noise, not by a wrong block


# --------------------------------------------------------------- the pools


@pytest.fixture(scope="module")
def pools():
    made = {}

    def get(world, backend="gloo"):
        key = (world, backend)
        if key not in made or made[key].broken:
            made[key] = Pool(world, backend)
        return made[key]

    yield get
    for pool in made.values():
        pool.close()


def _id(case):
    parts = [case["fn"] + (f"{case['ulysses']}" if case["fn"] == "hybrid" else "")]
    parts.append(case.get("layout", "HND"))
    parts.append("causal" if case.get("causal") else "full")
    if case.get("sharding") == "zigzag":
        parts.append("zigzag")
    hkv = case.get("hkv", case["hq"])
    parts.append(f"h{case['hq']}-{hkv}")
    parts.append(f"n{case['n']}" + (f"-{case['nkv']}" if "nkv" in case else ""))
    if case.get("all_to_all"):
        parts.append(case["all_to_all"])
    if case.get("dtype") is F16:
        parts.append("fp16")
    return "-".join(parts)


def _cases(cases):
    return [pytest.param(c, id=_id(c)) for c in cases]


# Uneven lengths are variable shards (no padding): n not divisible by the
# world size (or 2·world for zigzag) everywhere but in the first cases.
TWO = [
    dict(fn="ulysses", b=1, hq=4, n=128, d=32, seed=1),
    dict(fn="ulysses", b=2, hq=4, hkv=2, n=101, d=32, seed=2, layout="NHD", causal=True),
    dict(fn="ulysses", b=1, hq=4, hkv=1, n=99, d=64, seed=3, causal=True, sharding="zigzag"),
    dict(fn="ulysses", b=1, hq=6, hkv=3, n=77, d=32, seed=4, causal=True, dtype=F16),
    dict(fn="ulysses", b=1, hq=4, n=77, d=32, seed=5, layout="NHD", all_to_all="p2p"),
    dict(fn="ulysses", b=1, hq=4, n=64, nkv=90, d=32, seed=6),
    dict(fn="ring", b=1, hq=4, n=128, d=32, seed=7),
    dict(fn="ring", b=2, hq=4, hkv=2, n=101, d=32, seed=8, layout="NHD", causal=True),
    dict(fn="ring", b=1, hq=4, hkv=1, n=101, d=64, seed=9, causal=True, sharding="zigzag", dtype=F16),
    dict(fn="ring", b=1, hq=4, n=64, nkv=77, d=32, seed=10, layout="NHD"),
    dict(fn="hybrid", ulysses=2, b=1, hq=4, n=103, d=32, seed=11, causal=True, sharding="zigzag"),
    dict(fn="hybrid", ulysses=1, b=1, hq=4, hkv=2, n=103, d=32, seed=12, causal=True, layout="NHD"),
]

FOUR = [
    dict(fn="ulysses", b=1, hq=8, hkv=2, n=203, d=32, seed=21, causal=True),
    dict(fn="ulysses", b=1, hq=12, hkv=3, n=203, d=32, seed=22, causal=True, sharding="zigzag", layout="NHD"),
    dict(fn="ulysses", b=1, hq=4, n=150, d=32, seed=23, all_to_all="p2p"),
    dict(fn="hybrid", ulysses=4, b=1, hq=8, hkv=2, n=150, d=32, seed=29, causal=True, all_to_all="missing"),
    dict(fn="ring", b=1, hq=4, hkv=2, n=203, d=32, seed=24, causal=True),
    dict(fn="ring", b=1, hq=4, hkv=2, n=203, d=64, seed=25, causal=True, sharding="zigzag", layout="NHD"),
    dict(fn="ring", b=2, hq=4, hkv=1, n=190, nkv=150, d=32, seed=26, dtype=F16),
    dict(fn="hybrid", ulysses=2, b=1, hq=4, hkv=2, n=203, d=32, seed=27, causal=True, sharding="zigzag"),
    dict(fn="hybrid", ulysses=2, b=1, hq=4, n=150, d=32, seed=28, layout="NHD"),
]


def _exact(case):
    # Ulysses gives each rank whole heads over the whole sequence: the same
    # computation as one call, bit for bit, on the CPU.
    return case["fn"] == "ulysses" or (case["fn"] == "hybrid" and case["ulysses"] == case["world"])


@pytest.mark.parametrize("case", _cases(TWO))
def test_two_processes(pools, case):
    case = dict(case, world=2)
    check(case, pools(2).run(case), exact=_exact(case))


@pytest.mark.parametrize("case", _cases(FOUR))
def test_four_processes(pools, case):
    case = dict(case, world=4)
    check(case, pools(4).run(case), exact=_exact(case))


def test_seq_lens_given_and_uneven_contiguous_shards(pools):
    # Contiguous shards of any lengths (not the tensor_split ones), and the
    # lengths given rather than exchanged.
    for fn in ("ring", "ulysses"):
        case = dict(fn=fn, b=1, hq=4, n=100, d=32, seed=31, causal=True, splits=[70, 30], world=2)
        case["kwargs"] = {"seq_lens": [70, 30]}
        check(case, pools(2).run(case), exact=fn == "ulysses")


def test_options_reach_the_kernel(pools):
    # sageattn's options pass through: FP16 P·V is more accurate than FP8.
    base = dict(fn="ring", b=1, hq=4, n=128, d=64, seed=32, causal=True, sharding="zigzag", world=2)
    fp8 = pools(2).run(base)
    fp16 = pools(2).run(dict(base, kwargs={"pv_accum_dtype": "fp16+fp32", "qk_quant_gran": "per_warp"}))
    q, k, v = inputs(base)
    ref = reference(q, k, v, causal=True)[0]
    assert _errors(torch.from_numpy(fp16["out"]), ref)[1] < 0.6 * _errors(torch.from_numpy(fp8["out"]), ref)[1]
    check(base, fp16)


# ------------------------------------------------------------------- refusals

BAD = [
    (dict(fn="ulysses", hq=3, hkv=3), "ValueError", "not divisible by the Ulysses group size 2"),
    (dict(fn="ulysses", hq=4, hkv=3), "ValueError", "multiple of heads_kv"),
    (dict(fn="ring", layout="BHSD"), "ValueError", "tensor_layout = 'BHSD'"),
    (dict(fn="ring", dtype=torch.float32), "ValueError", "float16 or all bfloat16"),
    (dict(fn="ring", kwargs={"attn_mask": None}), "NotImplementedError", "attn_mask"),
    (dict(fn="ulysses", kwargs={"bogus": 1}), "TypeError", "'bogus'"),
    (dict(fn="ring", kwargs={"pv_accum_dtype": "fp64"}), "ValueError", "pv_accum_dtype"),
    (dict(fn="ring", corrupt_k=True), "ValueError", "head_dim"),
    (dict(fn="ring", sharding="striped", splits=[50, 50]), "ValueError", "sharding = 'striped'"),
    (dict(fn="ring", causal=True, nkv=60), "ValueError", "sharded alike"),
    (dict(fn="ring", causal=True, sharding="zigzag", splits=[60, 40]), "ValueError", "zigzag sharding of 100"),
    (dict(fn="ulysses", causal=True, sharding="zigzag", splits=[60, 40]), "ValueError", "zigzag sharding of 100"),
    (dict(fn="ring", kwargs={"seq_lens": [10, 90]}), "ValueError", "seq_lens"),
    (dict(fn="hybrid", ulysses=2, requires_grad=True), "NotImplementedError", "forward-only"),
]


@pytest.mark.parametrize("bad,error,message", BAD, ids=[m for _, _, m in BAD])
def test_bad_input_is_refused_on_every_rank(pools, bad, error, message):
    case = dict(dict(b=1, hq=4, n=100, d=32, seed=40, world=2, expect_error=True), **bad)
    got = pools(2).run(case)
    assert got["error"] == error, got
    assert message in got["message"], got["message"]


def test_no_process_group():
    q = torch.zeros(1, 2, 8, 16, dtype=BF16)
    if torch.distributed.is_initialized():
        pytest.skip("a process group exists in the test process")
    with pytest.raises(RuntimeError, match="init_process_group"):
        parallel.ring_attention(q, q, q)


# ------------------------------------------------------------- two GPUs, NCCL

GPU = [
    dict(fn="ulysses", b=1, hq=8, hkv=2, n=3001, d=128, seed=51, causal=True),
    dict(fn="ulysses", b=1, hq=6, hkv=1, n=2049, d=64, seed=52, layout="NHD", sharding="zigzag", causal=True),
    dict(fn="ulysses", b=1, hq=8, n=2048, d=128, seed=53, all_to_all="p2p"),
    dict(fn="ring", b=1, hq=8, n=2048, d=128, seed=54),
    dict(fn="ring", b=1, hq=8, hkv=2, n=3001, d=128, seed=55, causal=True, layout="NHD"),
    dict(fn="ring", b=2, hq=8, hkv=2, n=3001, d=64, seed=56, causal=True, sharding="zigzag", dtype=F16),
    dict(fn="ring", b=1, hq=8, n=1500, nkv=2500, d=128, seed=57),
    dict(fn="hybrid", ulysses=2, b=1, hq=8, n=2001, d=128, seed=58, causal=True, sharding="zigzag"),
    dict(fn="hybrid", ulysses=1, b=1, hq=8, hkv=4, n=2001, d=128, seed=59, causal=True, sharding="zigzag",
         layout="NHD"),
]


def _gpu_pairs():
    return torch.cuda.is_available() and torch.cuda.device_count() >= 2


@pytest.mark.gpu
@pytest.mark.skipif(not _gpu_pairs(), reason="GPU test skipped: needs 2 CUDA devices")
@pytest.mark.parametrize("case", _cases(GPU))
def test_two_gpus_nccl(pools, case):
    case = dict(case, world=2)
    got = pools(2, "nccl").run(case)
    if _exact(case):
        # the same heads over the same keys; equal unless the kernel's sums are order-dependent
        out, single = torch.from_numpy(got["out"]).double(), torch.from_numpy(got["single_out"]).double()
        q, k, v = inputs(case)
        ref = reference(q, k, v, case.get("layout", "HND"), causal=case.get("causal", False))[0]
        assert float((out - single).abs().sum() / ref.abs().sum()) <= 0.1 * _errors(single, ref)[1]
    check(case, got)


# ---------------------------------------------------------- the merge helpers


def _parts(n_keys, cuts):
    bounds = [0, *cuts, n_keys]
    return [(a, b) for a, b in zip(bounds, bounds[1:])]


@pytest.mark.parametrize("layout", ["HND", "NHD"])
def test_merge_of_key_blocks_matches_one_call(layout):
    case = dict(b=2, hq=4, hkv=2, n=96, nkv=200, d=64, seed=60, layout=layout)
    q, k, v = inputs(case)
    sd = 2 if layout == "HND" else 1
    outs, lses = [], []
    for a, b in _parts(200, [50, 120]):
        o, l = sa.sageattn(q, k.narrow(sd, a, b - a), v.narrow(sd, a, b - a), tensor_layout=layout, return_lse=True)
        outs.append(o)
        lses.append(l)
    out, lse = parallel.merge_attention(outs, lses, tensor_layout=layout)
    single = sa.sageattn(q, k, v, tensor_layout=layout)
    ref, ref_lse = reference(q, k, v, layout)
    assert out.dtype == q.dtype and lse.dtype == torch.float32
    assert _errors(out, ref)[1] <= 1.1 * _errors(single, ref)[1]
    assert float((lse.double() - ref_lse).abs().max()) <= LSE_BOUND[False]
    # update_attention, block by block, gives the same float32 result
    acc = torch.zeros(q.shape, dtype=torch.float32)
    acc_lse = torch.full(lse.shape, -math.inf)
    for o, l in zip(outs, lses):
        parallel.update_attention(acc, acc_lse, o, l, tensor_layout=layout)
    torch.testing.assert_close(acc.to(q.dtype), out, atol=1e-2, rtol=0)
    torch.testing.assert_close(acc_lse, lse, atol=1e-5, rtol=1e-5)


def test_merge_exact_in_float64_terms():
    # Merging exact partial results gives the exact whole: the formula, not the kernel.
    g = torch.Generator().manual_seed(61)
    q, k, v = (torch.randn(1, 2, n, 16, generator=g, dtype=torch.float64) for n in (8, 30, 30))
    outs, lses = [], []
    for a, b in _parts(30, [7, 19]):
        o, l = reference(q, k[:, :, a:b], v[:, :, a:b])
        outs.append(o.float())
        lses.append(l.float())
    out, lse = parallel.merge_attention(outs, lses)
    ref, ref_lse = reference(q, k, v)
    torch.testing.assert_close(out.double(), ref, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(lse.double(), ref_lse, atol=1e-6, rtol=1e-6)


def test_merge_rows_that_see_no_key():
    # Row 0 sees no key of part A (lse -inf), row 1 none of either part.
    out_a = torch.zeros(1, 1, 3, 4)
    lse_a = torch.tensor([[[-math.inf, -math.inf, 0.5]]])
    out_b = torch.ones(1, 1, 3, 4)
    lse_b = torch.tensor([[[1.0, -math.inf, 0.5]]])
    out, lse = parallel.merge_attention([out_a, out_b], [lse_a, lse_b])
    assert torch.equal(out[0, 0, 0], torch.ones(4)) and lse[0, 0, 0] == 1.0
    assert torch.equal(out[0, 0, 1], torch.zeros(4)) and lse[0, 0, 1] == -math.inf
    torch.testing.assert_close(out[0, 0, 2], torch.full((4,), 0.5))
    torch.testing.assert_close(lse[0, 0, 2], torch.tensor(0.5 + math.log(2)))
    acc, acc_lse = torch.zeros(1, 1, 3, 4), torch.full((1, 1, 3), -math.inf)
    for o, l in ((out_a, lse_a), (out_b, lse_b)):
        parallel.update_attention(acc, acc_lse, o, l)
    assert torch.equal(acc, out) and torch.equal(acc_lse, lse)
    # with the kernel: a fully masked row gives zeros and -inf, and merges away
    q, k, v = (torch.randn(1, 2, 6, 16).to(BF16) for _ in range(3))
    mask = torch.ones(6, 6, dtype=torch.bool)
    mask[2] = False
    o1, l1 = sa.sageattn(q, k[:, :, :3], v[:, :, :3], attn_mask=mask[:, :3], return_lse=True)
    o2, l2 = sa.sageattn(q, k[:, :, 3:], v[:, :, 3:], attn_mask=mask[:, 3:], return_lse=True)
    out, lse = parallel.merge_attention([o1, o2], [l1, l2])
    assert torch.isfinite(out).all() and torch.equal(out[:, :, 2], torch.zeros(1, 2, 16))
    assert (lse[:, :, 2] == -math.inf).all() and torch.isfinite(lse[:, :, [0, 1, 3, 4, 5]]).all()


def test_merge_varlen_layout():
    q, k, v = (torch.randn(40, 2, 16).to(BF16) for _ in range(3))
    cu = torch.tensor([0, 15, 40], dtype=torch.int32)
    whole, whole_lse = sa.sageattn_varlen(q, k, v, cu, cu, 25, 25, return_lse=True)
    # the same keys, split in two per-sequence halves
    cu_a, cu_b = torch.tensor([0, 7, 19], dtype=torch.int32), torch.tensor([0, 8, 21], dtype=torch.int32)
    ka = torch.cat([k[0:7], k[15:27]])
    va = torch.cat([v[0:7], v[15:27]])
    kb = torch.cat([k[7:15], k[27:40]])
    vb = torch.cat([v[7:15], v[27:40]])
    oa, la = sa.sageattn_varlen(q, ka, va, cu, cu_a, 25, 12, return_lse=True)
    ob, lb = sa.sageattn_varlen(q, kb, vb, cu, cu_b, 25, 13, return_lse=True)
    out, lse = parallel.merge_attention([oa, ob], [la, lb], tensor_layout="THD")
    ref = torch.cat([reference(q[None, a:b], k[None, a:b], v[None, a:b], "NHD")[0][0] for a, b in ((0, 15), (15, 40))])
    assert _errors(out, ref)[1] <= 1.2 * _errors(whole, ref)[1]
    torch.testing.assert_close(lse, whole_lse, atol=0.03, rtol=0)


def test_merge_refusals():
    o, l = torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3)
    with pytest.raises(ValueError, match="tensor_layout"):
        parallel.merge_attention([o], [l], tensor_layout="BHSD")
    with pytest.raises(ValueError, match="as many outs as lses"):
        parallel.merge_attention([o, o], [l])
    with pytest.raises(ValueError, match="every lse"):
        parallel.merge_attention([o, o], [l, l.transpose(1, 2)])
    with pytest.raises(ValueError, match="float32"):
        parallel.update_attention(o.half(), l, o, l)
    nhd = o.transpose(1, 2).contiguous()  # [b, n, h, d]: its lse is still [b, h, n]
    parallel.update_attention(nhd, l.clone(), nhd, l, tensor_layout="NHD")
    with pytest.raises(ValueError, match=r"shape \[1, 2, 3\] for NHD"):
        parallel.update_attention(nhd, l.transpose(1, 2), nhd, l, tensor_layout="NHD")


# --------------------------------------------------------------- the sharding


def test_sequence_shards():
    assert parallel.sequence_shards(10, 2) == [[(0, 5)], [(5, 10)]]
    assert parallel.sequence_shards(7, 3) == [[(0, 3)], [(3, 5)], [(5, 7)]]
    assert parallel.sequence_shards(10, 2, "zigzag") == [[(0, 3), (8, 10)], [(3, 6), (6, 8)]]
    assert parallel.sequence_shards(16, 4, "zigzag") == [[(0, 2), (14, 16)], [(2, 4), (12, 14)], [(4, 6), (10, 12)], [(6, 8), (8, 10)]]
    # hybrid: ring positions zigzag, each split over its two Ulysses ranks
    assert parallel.sequence_shards(11, 4, "zigzag", ulysses_size=2) == [[(0, 3)], [(9, 11)], [(3, 6)], [(6, 9)]]
    assert parallel.sequence_shards(12, 4, "zigzag", ulysses_size=2) == [[(0, 3)], [(9, 12)], [(3, 6)], [(6, 9)]]
    # a Ulysses split across the two chunks of a ring position
    assert parallel.sequence_shards(12, 6, "zigzag", ulysses_size=3) == [
        [(0, 2)], [(2, 3), (9, 10)], [(10, 12)], [(3, 5)], [(5, 6), (6, 7)], [(7, 9)]
    ]
    for n, world, sharding, u in [(13, 4, "zigzag", 1), (29, 4, "zigzag", 2), (5, 4, "contiguous", 1), (3, 2, "zigzag", 1)]:
        shards = parallel.sequence_shards(n, world, sharding, u)
        covered = sorted(t for ranges in shards for s, e in ranges for t in range(s, e))
        assert covered == list(range(n))
        for ranges in shards:  # every rank's tokens in increasing order
            tokens = [t for s, e in ranges for t in range(s, e)]
            assert tokens == sorted(tokens)
    with pytest.raises(ValueError, match="ulysses_size"):
        parallel.sequence_shards(10, 4, ulysses_size=3)
    with pytest.raises(ValueError, match="sharding"):
        parallel.sequence_shards(10, 4, "striped")


def test_shard_sequence():
    x = torch.arange(2 * 11 * 3).view(2, 11, 3)
    parts = [parallel.shard_sequence(x, 1, r, 2, "zigzag") for r in range(2)]
    assert [p.size(1) for p in parts] == [5, 6]  # chunks of 3, 3, 3, 2 tokens: rank 0 has the first and last
    assert parts[0][0, :, 0].tolist() == [0, 3, 6, 27, 30]  # tokens 0-2 and 9-10
    assert parallel.shard_sequence(x, 1, 1, 2)._base is not None  # one range: a view
