"""torch.compile(fullgraph=True) through sdpa and the reference API."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sageattention as sa
from attn_helpers import cosine, make, qkv

FWD = torch.ops.sageattention.fwd.default


class Block(nn.Module):
    """A pre-norm transformer block whose attention calls F.scaled_dot_product_attention."""

    def __init__(self, dim=64, heads=4, kv_heads=2):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * kv_heads * self.head_dim)
        self.proj = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x, mask=None):
        b, n, _ = x.shape
        h = self.norm1(x)
        q = self.q(h).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        k, v = self.kv(h).view(b, n, 2, self.kv_heads, self.head_dim).transpose(1, 3).unbind(2)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None, enable_gqa=True)
        x = x + self.proj(a.transpose(1, 2).reshape(b, n, -1))
        return x + self.mlp(self.norm2(x))


def recording(backend):
    """A torch.compile backend that keeps the graphs it is given."""
    graphs = []

    def compile_fn(gm, example_inputs):
        graphs.append(gm)
        if backend == "inductor":
            from torch._inductor.compile_fx import compile_fx

            return compile_fx(gm, example_inputs)
        return gm.forward

    return compile_fn, graphs


def op_count(graphs):
    return sum(node.target is FWD or node.target is torch.ops.sageattention.fwd for g in graphs for node in g.graph.nodes)


def test_transformer_block_with_inductor():
    torch._dynamo.reset()
    block = Block().to(torch.bfloat16).eval()
    x = make((2, 32, 64), torch.bfloat16, 1)
    backend, graphs = recording("inductor")
    with torch.no_grad(), sa.patched_sdpa():
        eager = block(x)
        compiled = torch.compile(block, backend=backend, fullgraph=True)
        out = compiled(x)
        out2 = compiled(make((2, 32, 64), torch.bfloat16, 2))
    assert op_count(graphs) == 1, "sdpa did not become the sageattention op in the graph"
    assert cosine(out, eager) >= 0.999 and torch.isfinite(out2.float()).all()
    assert F.scaled_dot_product_attention is sa._ops.torch_sdpa  # unpatched afterwards
    with torch.no_grad():
        assert cosine(block(x), eager) >= 0.999  # torch's own SDPA agrees with the quantized one


def test_compiled_reference_api_equals_eager():
    torch._dynamo.reset()
    q, k, v = qkv(b=2, hq=4, hkv=2, lq=24, lkv=40, d=16, layout="NHD", seed=3)
    mask = make((24, 40), torch.float32, 4)

    def f(q, k, v, mask):
        out, lse = sa.sageattn(q, k, v, tensor_layout="NHD", is_causal=True, return_lse=True, attn_mask=mask)
        return out * 2, lse

    backend, graphs = recording("aot_eager")
    out, lse = torch.compile(f, backend=backend, fullgraph=True)(q, k, v, mask)
    eager_out, eager_lse = f(q, k, v, mask)
    assert op_count(graphs) == 1
    assert torch.equal(out, eager_out) and torch.equal(lse, eager_lse)


def test_compiled_training_step_uses_the_recomputed_backward():
    torch._dynamo.reset()
    q, k, v = qkv(b=1, hq=2, lq=16, d=16, seed=5)

    def loss(q, k, v):
        return sa.sageattn(q, k, v, is_causal=True).float().square().sum()

    grads = []
    for fn in (loss, torch.compile(loss, backend="aot_eager", fullgraph=True)):
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        fn(*leaves).backward()
        grads.append([t.grad for t in leaves])
    for eager, compiled in zip(*grads):
        assert torch.equal(eager, compiled)


def test_varlen_compiles():
    torch._dynamo.reset()
    cu = torch.tensor([0, 5, 21], dtype=torch.int32)
    q, k, v = (make((21, 2, 16), seed=s) for s in (1, 2, 3))
    f = lambda q, k, v, cu: sa.sageattn_varlen(q, k, v, cu, cu, 16, 16, is_causal=True)
    torch.testing.assert_close(torch.compile(f, backend="aot_eager", fullgraph=True)(q, k, v, cu), f(q, k, v, cu))


def test_dynamic_shapes():
    torch._dynamo.reset()
    f = lambda q, k, v: sa.sdpa(q, k, v, is_causal=True)  # noqa: E731
    backend, graphs = recording("aot_eager")
    g = torch.compile(f, backend=backend, fullgraph=True, dynamic=True)
    for n in (24, 40, 56):  # never 16: duck sizing would tie len to head_dim
        q, k, v = qkv(lq=n, d=16, seed=n)
        assert torch.equal(g(q, k, v), f(q, k, v))
    assert len(graphs) == 1 and op_count(graphs) == 1


@pytest.mark.gpu
def test_gpu_block_with_cuda_graphs():
    torch._dynamo.reset()
    block = Block().to("cuda", torch.bfloat16).eval()
    x = make((2, 128, 64), torch.bfloat16, 1, device="cuda")
    with torch.no_grad(), sa.patched_sdpa():
        eager = block(x)
        compiled = torch.compile(block, mode="reduce-overhead", fullgraph=True)
        for _ in range(3):  # recorded, then replayed from the CUDA graph
            out = compiled(x)
    assert cosine(out.cpu(), eager.cpu()) >= 0.999
