"""Smoke test of an installed sageattention wheel: run it with the
interpreter the wheel is installed in, from outside the source tree, with
SAGEATTN_LIBRARY and PYTHONPATH unset (tests/wheel/test_wheel.sh does).
Where diffusers is importable, also checks that it accepts the wheel.

    python -I smoke.py LABEL        # LABEL: the wheel's local label, cu13 or cpu
"""

import importlib.metadata
import os
import sys
import sysconfig

import sageattention
import torch

label = sys.argv[1]
site = os.path.realpath(sysconfig.get_paths()["platlib"])
pkg = os.path.realpath(os.path.dirname(sageattention.__file__))
assert "SAGEATTN_LIBRARY" not in os.environ, "SAGEATTN_LIBRARY must be unset"
assert os.path.normcase(pkg) == os.path.normcase(os.path.join(site, "sageattention")), (
    f"sageattention imported from {pkg}, not from {site}"
)
lib = os.path.realpath(sageattention.library_path)
library_name = "sageattn.dll" if sys.platform == "win32" else "libsageattn.so"
assert os.path.normcase(lib) == os.path.normcase(os.path.join(pkg, "lib", library_name)), f"library loaded from {lib}"

dist_version = importlib.metadata.version("sageattention")
assert sageattention.__version__ == dist_version, (
    sageattention.__version__,
    dist_version,
)
base, _, local = dist_version.partition("+")
assert local == label, f"version {dist_version}: expected the label +{label}"
info = sageattention.build_info()
# The SageAttention API the package implements, then the library's own release.
from sageattention._api_version import API_VERSION  # noqa: E402

assert base == f"{API_VERSION}.{info['version']}", (base, API_VERSION, info["version"])
assert ("cuda" in info["backends"]) == (label != "cpu"), info["backends"]

torch.manual_seed(0)
q, k, v = (torch.randn(1, 2, 64, 64, dtype=torch.bfloat16) for _ in range(3))
out = sageattention.sageattn(q, k, v, tensor_layout="HND", is_causal=True)
ref = sageattention.reference_attention(q, k, v, tensor_layout="HND", is_causal=True)
assert out.shape == ref.shape == q.shape and out.dtype == q.dtype
assert torch.isfinite(out).all()
cos = torch.nn.functional.cosine_similarity(
    out.double().flatten(), ref.double().flatten(), dim=0
).item()
assert cos > 0.999, f"cosine similarity {cos} against reference_attention"

# diffusers, where the environment has it, takes the installed wheel by its
# metadata (its sage backends need sageattention >= 2.1.1) and runs it.
try:
    from diffusers.models import attention_dispatch
except ImportError:
    print("diffusers is not installed here: its version gate is not checked")
else:
    assert attention_dispatch._CAN_USE_SAGE_ATTN, f"diffusers refuses sageattention {dist_version}"
    assert attention_dispatch.sageattn is sageattention.sageattn
    nhd = [t.transpose(1, 2) for t in (q, k, v)]
    with sageattention.count_calls() as counts:
        got = attention_dispatch.dispatch_attention_fn(*nhd, is_causal=True, backend="sage").transpose(1, 2)
    assert counts.library == 1 and torch.equal(got, out), counts
    import diffusers

    print(f"diffusers {diffusers.__version__}: backend 'sage' runs on the installed sageattention")

print(f"sageattention {sageattention.__version__} from {pkg}")
print(
    f"  library {info['version']} ({', '.join(info['backends'])}), torch {torch.__version__}, "
    f"Python {sys.version.split()[0]}; CPU attention vs reference: cosine {cos:.6f}"
)
