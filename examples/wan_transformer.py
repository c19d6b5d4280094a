"""Wan 2.1 video diffusion transformer (diffusers' WanTransformer3DModel) with
torch's SDPA and with sageattention.patch_sdpa(): model-level speed and how
much the output moves.

    python examples/wan_transformer.py                       # 1.3B sizes, 81 frames 480x832 (32760 tokens)
    python examples/wan_transformer.py --config 14b --layers 8
    python examples/wan_transformer.py --steps 4 --decode    # a short sampling loop, decoded by a (random) Wan VAE
    python examples/wan_transformer.py --tiny                # toy sizes on the CPU, seconds

The model is built from its config with random weights (nothing can be
downloaded here): real layer sizes, so the timings are the real model's;
the accuracy is indicative only (a trained model's attention is sharper:
--qk-gain scales the Q/K RMSNorm weights to imitate that).

Every attention call of this model (self-attention over the video tokens,
cross-attention to the 512 text tokens) goes through diffusers' attention
dispatcher, whose default "native" backend calls
torch.nn.functional.scaled_dot_product_attention, so patch_sdpa() reaches
all of them; the run prints how many actually ran on sageattention.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

# diffusers' Wan 2.1 configs (transformer/config.json of the T2V checkpoints).
CONFIGS = {
    "1.3b": dict(num_attention_heads=12, attention_head_dim=128, ffn_dim=8960, num_layers=30),
    "14b": dict(num_attention_heads=40, attention_head_dim=128, ffn_dim=13824, num_layers=40),
    "tiny": dict(num_attention_heads=2, attention_head_dim=16, ffn_dim=64, num_layers=2, text_dim=32, freq_dim=32),
}
TEXT_TOKENS = 512  # umT5 context length of the Wan pipelines


def add_model_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--config", default="1.3b", choices=["1.3b", "14b"], help="Wan 2.1 T2V layer sizes")
    ap.add_argument("--frames", type=int, default=81, help="video frames (4k+1; latent frames = (frames-1)/4+1)")
    ap.add_argument("--height", type=int, default=480, help="video height in pixels (latent: /8, tokens: /16)")
    ap.add_argument("--width", type=int, default=832, help="video width in pixels")
    ap.add_argument("--qk-gain", type=float, default=1.0,
                    help="scale of the Q/K RMSNorm weights: attention logits grow ~gain² (sharper softmax)")


def import_diffusers():
    try:
        import diffusers
        from diffusers import WanTransformer3DModel
    except ImportError as e:
        raise SystemExit(f"this example needs diffusers (pip install diffusers): {e}")
    return diffusers, WanTransformer3DModel


def resolve(args) -> None:
    _common.resolve_common(args)
    if args.tiny:
        args.config_name, args.frames, args.height, args.width = "tiny", 5, 64, 64
    else:
        args.config_name = args.config
    cfg = dict(CONFIGS[args.config_name])
    if args.layers:
        cfg["num_layers"] = args.layers
    args.model_config = cfg
    args.text_tokens = 8 if args.tiny else TEXT_TOKENS
    args.latent_shape = (1, 16, (args.frames - 1) // 4 + 1, args.height // 8, args.width // 8)
    _, _, f, h, w = args.latent_shape
    args.tokens = f * (h // 2) * (w // 2)


def build(args):
    """The model (random weights, on args.device in args.torch_dtype) and its inputs."""
    _, WanTransformer3DModel = import_diffusers()
    gen = _common.seeded_generator(args.device, args.seed)
    with torch.device(args.device):
        model = WanTransformer3DModel(**args.model_config)
    _common.init_random_(model, gen)
    with torch.no_grad():
        for name, m in model.named_modules():
            if name.endswith(("norm_q", "norm_k")) and getattr(m, "weight", None) is not None:
                m.weight.fill_(args.qk_gain)
    _common.cast_like_pipelines_(model, args.torch_dtype)
    text_dim = model.config.text_dim
    inputs = dict(
        hidden_states=torch.randn(args.latent_shape, generator=gen, device=args.device).to(args.torch_dtype),
        encoder_hidden_states=torch.randn(1, args.text_tokens, text_dim, generator=gen, device=args.device).to(
            args.torch_dtype
        ),
        timestep=torch.tensor([500], device=args.device),
    )
    return model, inputs


def sample(model, inputs, steps):
    """`steps` Euler steps of flow matching from the same noise: the latent a
    short sampling loop ends with."""
    x = inputs["hidden_states"]
    sigmas = torch.linspace(1.0, 0.0, steps + 1).tolist()
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        t = torch.full((x.shape[0],), 1000.0 * s, device=x.device)
        v = model(x, t, inputs["encoder_hidden_states"], return_dict=False)[0]
        x = (x.float() + (s_next - s) * v.float()).to(x.dtype)
    return x


def build_vae(args):
    """Wan's video VAE at its real sizes, random weights; decodes in float32."""
    from diffusers import AutoencoderKLWan

    gen = _common.seeded_generator(args.device, args.seed + 1)
    kwargs = dict(base_dim=8, dim_mult=[1, 2, 2, 2]) if args.tiny else {}
    with torch.device(args.device):
        vae = AutoencoderKLWan(**kwargs)
    _common.init_random_(vae, gen)
    return vae.float().eval().requires_grad_(False)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    _common.add_common_args(ap)
    add_model_args(ap)
    ap.add_argument("--steps", type=int, default=1,
                    help="also compare the latent after this many sampling steps (1: the model output only)")
    ap.add_argument("--decode", action="store_true",
                    help="also decode the final latent with a random-weight Wan VAE and compare the videos")
    args = ap.parse_args(argv)
    resolve(args)
    diffusers, _ = import_diffusers()
    c = args.model_config
    _common.describe(
        args,
        f"Wan 2.1 {args.config_name} transformer (diffusers {diffusers.__version__}): {c['num_layers']} blocks, "
        f"{c['num_attention_heads']} heads x {c['attention_head_dim']}; {args.frames} frames {args.height}x{args.width}"
        f" -> latent {tuple(args.latent_shape[2:])} -> {args.tokens} video tokens, {args.text_tokens} text tokens",
    )
    model, inputs = build(args)
    vae = build_vae(args) if args.decode else None

    def step():
        return model(**inputs, return_dict=False)[0]

    def outputs(detail):
        out = {"model output": step()}
        if detail and (args.steps > 1 or vae is not None):
            latent = sample(model, inputs, args.steps) if args.steps > 1 else out["model output"]
            if args.steps > 1:
                out[f"latent after {args.steps} steps"] = latent
            if vae is not None:
                video = vae.decode(latent.float(), return_dict=False)[0].clamp(-1, 1)
                out["decoded video"] = video
        return out

    # Decoded frames live in [-1, 1]: their PSNR takes the range, 2, as its peak.
    result = _common.compare_model(step, outputs, args, peaks={"decoded video": 2.0})
    result.update(model="wan2.1-" + args.config_name, tokens=args.tokens, text_tokens=args.text_tokens,
                  config=args.model_config, frames=args.frames, height=args.height, width=args.width,
                  steps=args.steps, qk_gain=args.qk_gain, dtype=args.dtype)
    return _common.finish(result, args)


if __name__ == "__main__":
    sys.exit(main())
