"""Opt-in counts of where attention calls ran: `sageattention.count_calls()`.

A model patched with `patch_sdpa()` runs some attention calls on the library
and hands others to torch (float32 layers, dropout, inputs that need grad,
a kernel this GPU lacks). Speedups measured on a model where everything fell
back are torch's own; counting says which is which. Off by default: the only
cost then is one module-attribute read per call.
"""

from __future__ import annotations

import contextlib

# The CallCounts being filled, or None. Read by _plan.forward and sdpa.sdpa.
active: CallCounts | None = None


class CallCounts:
    """Attention calls seen while counting was on.

    `library`: problems the library computed (every entry point: `sdpa`,
    `sageattn*`, the ops, eager or compiled).
    `torch`: calls computed by torch's SDPA instead, by reason. A reason
    starting with "sdpa:" is one of `sdpa`'s rules (docs/PYTHON.md); one
    starting with "kernel:" is a problem the library accepted but cannot run
    on this device. Under torch.compile the "sdpa:" decisions are taken while
    tracing, not per call, and are not counted.
    """

    def __init__(self, parent: CallCounts | None = None):
        self.library = 0
        self.torch: dict[str, int] = {}
        self._parent = parent

    def ran(self) -> None:
        self.library += 1
        if self._parent is not None:
            self._parent.ran()

    def fell_back(self, reason: str) -> None:
        self.torch[reason] = self.torch.get(reason, 0) + 1
        if self._parent is not None:
            self._parent.fell_back(reason)

    @property
    def fallbacks(self) -> int:
        return sum(self.torch.values())

    @property
    def total(self) -> int:
        return self.library + self.fallbacks

    def as_dict(self) -> dict:
        return {"library": self.library, "torch": dict(self.torch), "total": self.total}

    def __str__(self) -> str:
        if not self.total:
            return "no attention calls"
        text = f"{self.library} of {self.total} attention calls ran on sageattention"
        if self.torch:
            reasons = ", ".join(f"{why} ×{n}" for why, n in sorted(self.torch.items(), key=lambda kv: -kv[1]))
            text += f"; {self.fallbacks} on torch's SDPA ({reasons})"
        return text

    def __repr__(self) -> str:
        return f"CallCounts(library={self.library}, torch={self.torch!r})"


@contextlib.contextmanager
def count_calls():
    """`with sageattention.count_calls() as counts: model(x)`, then
    `counts.library`, `counts.torch` (reason -> calls) or `print(counts)`.
    Blocks nest: an inner block's calls also count in the outer one."""
    global active
    previous = active
    counts = CallCounts(previous)
    active = counts
    try:
        yield counts
    finally:
        active = previous
