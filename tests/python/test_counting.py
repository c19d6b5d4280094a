"""sageattention.count_calls(): where attention calls ran, and why some did not."""

import torch
import torch.nn.functional as F

import sageattention


def _qkv(dtype=torch.bfloat16, n=64):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(1, 2, n, 32, generator=g).to(dtype) for _ in range(3)]


def test_counts_library_and_each_fallback_reason():
    q, k, v = _qkv()
    with sageattention.count_calls() as counts, sageattention.patched_sdpa():
        F.scaled_dot_product_attention(q, k, v)
        F.scaled_dot_product_attention(q, k, v, is_causal=True)
        F.scaled_dot_product_attention(q.float(), k.float(), v.float())
        F.scaled_dot_product_attention(q, k, v, dropout_p=0.5)
        F.scaled_dot_product_attention(q.requires_grad_(), k, v)
    assert counts.library == 2
    assert counts.torch == {"sdpa: dtype not fp16/bf16": 1, "sdpa: dropout": 1, "sdpa: needs grad": 1}
    assert counts.total == 5 and counts.fallbacks == 3
    assert str(counts).startswith("2 of 5 attention calls ran on sageattention")
    assert counts.as_dict()["torch"]["sdpa: dropout"] == 1


def test_every_entry_point_counts_and_blocks_nest():
    q, k, v = _qkv()
    with sageattention.count_calls() as outer:
        sageattention.sageattn(q, k, v)
        with sageattention.count_calls() as inner:
            sageattention.sdpa(q, k, v)
            torch.ops.sageattention.fwd.default(q, k, v, 0, None, None, None, 0, 0, False, 0.0, False,
                                                *sageattention._ops.DEFAULT_OPTIONS[2:], False)
    assert inner.library == 2
    assert outer.library == 3
    assert str(sageattention.CallCounts()) == "no attention calls"


def test_off_by_default_and_after_the_block():
    q, k, v = _qkv()
    assert sageattention._counting.active is None
    with sageattention.count_calls() as counts:
        pass
    sageattention.sdpa(q, k, v)
    assert counts.total == 0 and sageattention._counting.active is None


def test_counts_library_calls_inside_a_compiled_graph():
    q, k, v = _qkv()

    def f(q, k, v):
        return F.scaled_dot_product_attention(q, k, v) * 2

    with sageattention.patched_sdpa():
        compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
        compiled(q, k, v)  # traced here, outside the counting block
        with sageattention.count_calls() as counts:
            compiled(q, k, v)
            compiled(q, k, v)
    # The op runs per call in the graph, so every call is counted.
    assert counts.library == 2, counts
