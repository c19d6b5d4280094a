"""transformers (installed from the package index) through patch_sdpa().

Models built with `attn_implementation="sdpa"` call
`torch.nn.functional.scaled_dot_product_attention`, looked up at call time, from
transformers' attention interface (`sdpa_attention_forward`), so patch_sdpa()
reaches every call. Each transformers path is exercised with a tiny model of
random weights and held to what actually ran (count_calls) and to the
unpatched model's output:

- a causal LM prefill without padding: `is_causal=True`, `enable_gqa=True`;
- a padded batch: a 4-D bool mask, K/V heads repeated;
- generation with a KV cache: one query a step, GQA packed as queries
  ([b, heads_kv, groups, d]) with a [b, 1, 1, len_kv] mask;
- an encoder (BERT) with padding: non-causal, masked;
- `attn_implementation="eager"`: transformers computes attention itself, so
  nothing reaches SDPA, and nothing reaches us (docs/CLIENTS.md says so).

CPU tensors; the same on the GPU where there is one (marked gpu).
"""

import pytest
import torch

import sageattention
from attn_helpers import cosine, record_abi

transformers = pytest.importorskip("transformers", reason="transformers is not installed (scripts/setup.sh installs it)")

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
LAYERS = 2


def _build(cls, config, device):
    torch.manual_seed(0)  # transformers initialises with the global generator
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # as from_pretrained(dtype=torch.bfloat16) builds it
    try:
        with torch.device(device):
            model = cls(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval().requires_grad_(False)


def _llama(device, attn="sdpa"):
    config = transformers.LlamaConfig(
        hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        vocab_size=256, max_position_embeddings=256, num_hidden_layers=LAYERS, attn_implementation=attn,
    )
    return _build(transformers.LlamaForCausalLM, config, device)


def _inputs(device, batch=2, tokens=40, pad=0):
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 256, (batch, tokens), generator=gen).to(device)
    mask = torch.ones(batch, tokens, dtype=torch.long)
    mask[-1, :pad] = 0  # left padding of the last sequence
    return ids, mask.to(device)


def _patched(fn):
    with torch.no_grad(), sageattention.count_calls() as counts, sageattention.patched_sdpa():
        out = fn()
    return out, counts


def _all_ours(counts, expected):
    assert counts.torch == {} and counts.library == expected == counts.total, counts


@pytest.mark.parametrize("device", DEVICES)
def test_causal_lm_prefill(device):
    model = _llama(device)
    ids, _ = _inputs(device, batch=1)
    with torch.no_grad():
        reference = model(ids).logits
    out, counts = _patched(lambda: model(ids).logits)
    _all_ours(counts, LAYERS)  # is_causal=True, enable_gqa=True: both run here
    assert cosine(out, reference) > 0.999


@pytest.mark.parametrize("device", DEVICES)
def test_padded_batch_and_generation_with_a_cache(device):
    model = _llama(device)
    ids, mask = _inputs(device, pad=7)
    new_tokens = 4

    def run():
        logits = model(ids, attention_mask=mask).logits
        gen = model.generate(ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                             do_sample=False, output_logits=True, return_dict_in_generate=True)
        return logits, torch.stack(gen.logits)

    with torch.no_grad():
        ref_logits, ref_scores = run()
    (logits, scores), counts = _patched(run)
    # One padded forward, the generation's prefill, then one call per layer and new token.
    _all_ours(counts, LAYERS * (2 + new_tokens - 1))
    keep = mask.bool()  # the padding's own rows are not compared: they see no key
    assert cosine(logits[keep], ref_logits[keep]) > 0.999
    assert cosine(scores, ref_scores) > 0.999


@pytest.mark.parametrize("device", DEVICES)
def test_encoder_with_padding(device, monkeypatch):
    config = transformers.BertConfig(hidden_size=64, intermediate_size=128, num_attention_heads=4,
                                     num_hidden_layers=LAYERS, vocab_size=256, attn_implementation="sdpa")
    model = _build(transformers.BertModel, config, device)
    ids, mask = _inputs(device, tokens=33, pad=13)
    with torch.no_grad():
        reference = model(ids, attention_mask=mask).last_hidden_state
    with record_abi(monkeypatch) as rec:
        out, counts = _patched(lambda: model(ids, attention_mask=mask).last_hidden_state)
    _all_ours(counts, LAYERS)
    keep = mask.bool()
    assert cosine(out[keep], reference[keep]) > 0.999
    # What reached the library: the padding mask, not causal.
    assert len(rec.calls) == LAYERS and all(p.mask.type != 0 and p.causal == 0 for p in rec.calls)


def test_eager_attention_never_reaches_sdpa():
    model = _llama("cpu", attn="eager")
    ids, _ = _inputs("cpu", batch=1)
    _, counts = _patched(lambda: model(ids).logits)
    assert counts.total == 0, counts
