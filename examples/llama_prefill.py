"""LLM prefill: a transformers Llama model at Llama-3-8B layer sizes, with
torch's SDPA and with sageattention.patch_sdpa(): model-level speed and how
much the hidden states move.

    python examples/llama_prefill.py                  # 8 layers, 8192 tokens, batch 1, causal
    python examples/llama_prefill.py --layers 32 --tokens 16384
    python examples/llama_prefill.py --tiny           # toy sizes on the CPU, seconds

The model is LlamaModel (no LM head) built from a LlamaConfig with
attn_implementation="sdpa" and transformers' own random initialisation
(normal, std 0.02; nothing can be downloaded here): 4096 hidden, 32 query
heads, 8 KV heads (GQA), head_dim 128, MLP 14336, vocabulary 128256, RoPE
theta 500000; fewer layers than the real 32 to fit the time. Timings are the
real layers'; the accuracy is indicative only.

A prefill without padding gives transformers no mask to build, so every layer
calls torch.nn.functional.scaled_dot_product_attention with is_causal=True
(and enable_gqa=True where torch has it): the path patch_sdpa() replaces.

Attention is a modest share of a prefill at 8k tokens (the MLP and the
projections dominate), so the model-level speedup is bounded well below the
kernel's: the run measures that bound (a forward with attention removed) and
prints it beside the speedup.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

LLAMA3_8B = dict(hidden_size=4096, intermediate_size=14336, num_attention_heads=32, num_key_value_heads=8,
                 head_dim=128, vocab_size=128256, rope_theta=500000.0, rms_norm_eps=1e-5,
                 max_position_embeddings=131072, num_hidden_layers=8)
TINY = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            vocab_size=256, rope_theta=10000.0, rms_norm_eps=1e-5, max_position_embeddings=1024, num_hidden_layers=2)


def add_model_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--tokens", type=int, default=8192, help="prompt length (one sequence)")
    ap.add_argument("--batch", type=int, default=1)


def import_transformers():
    try:
        import transformers
        from transformers import LlamaConfig, LlamaModel
    except ImportError as e:
        raise SystemExit(f"this example needs transformers (pip install transformers): {e}")
    return transformers, LlamaConfig, LlamaModel


def resolve(args) -> None:
    _common.resolve_common(args)
    cfg = dict(TINY if args.tiny else LLAMA3_8B)
    if args.tiny:
        args.tokens = min(args.tokens, 64)
    if args.layers:
        cfg["num_hidden_layers"] = args.layers
    args.model_config = cfg


def build(args):
    """The model (random weights, on args.device in args.torch_dtype) and its inputs."""
    _, LlamaConfig, LlamaModel = import_transformers()
    config = LlamaConfig(**args.model_config, attn_implementation="sdpa")
    torch.manual_seed(args.seed)  # transformers initialises with the global generator
    previous = torch.get_default_dtype()
    torch.set_default_dtype(args.torch_dtype)
    try:
        with torch.device(args.device):
            model = LlamaModel(config)
    finally:
        torch.set_default_dtype(previous)
    # Built under the default dtype, as from_pretrained(dtype=...) builds it:
    # the weights are in that dtype, RoPE's inverse frequencies stay float32.
    model.eval().requires_grad_(False)
    gen = _common.seeded_generator(args.device, args.seed)
    ids = torch.randint(0, config.vocab_size, (args.batch, args.tokens), generator=gen, device=args.device)
    return model, dict(input_ids=ids, use_cache=False)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    _common.add_common_args(ap)
    add_model_args(ap)
    args = ap.parse_args(argv)
    resolve(args)
    transformers, _, _ = import_transformers()
    c = args.model_config
    _common.describe(
        args,
        f"Llama prefill (transformers {transformers.__version__}, LlamaModel, sdpa): {c['num_hidden_layers']} layers, "
        f"hidden {c['hidden_size']}, {c['num_attention_heads']} query / {c['num_key_value_heads']} KV heads x "
        f"{c['head_dim']}; batch {args.batch} x {args.tokens} tokens, causal",
    )
    model, inputs = build(args)

    # The last layer's output before the final norm, and the embeddings: their
    # difference is what the layers added, the part attention can change (the
    # hidden state's cosine alone is flattered by the residual stream).
    seen = {}
    model.embed_tokens.register_forward_hook(lambda m, i, o: seen.__setitem__("embeddings", o))
    model.layers[-1].register_forward_hook(
        lambda m, i, o: seen.__setitem__("last layer", o[0] if isinstance(o, tuple) else o)
    )

    def step():
        return model(**inputs).last_hidden_state

    def outputs(detail):
        hidden = step()
        return {"last hidden state": hidden, "layers' contribution": seen["last layer"] - seen["embeddings"]}

    result = _common.compare_model(step, outputs, args)
    result.update(model="llama-3-8b-sizes", tokens=args.tokens, batch=args.batch, config=args.model_config,
                  dtype=args.dtype)
    return _common.finish(result, args)


if __name__ == "__main__":
    sys.exit(main())
