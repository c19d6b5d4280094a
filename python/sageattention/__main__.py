"""`python -m sageattention COMMAND [OPTIONS]`: the package's command-line tools.

    python -m sageattention doctor [--no-bench] [--quick] [--json]
    python -m sageattention bench [OPTIONS]          (= python -m sageattention.bench)

Python imports the package before it runs this module; when the library
cannot be loaded, the package keeps the error instead of raising it (only
under `python -m sageattention`, see __init__.py), so the doctor can report
why `import sageattention` fails and what to do.
"""

from __future__ import annotations

import argparse
import sys

PROG = "python -m sageattention"

# name -> (one line for the command list, the command's own description)
COMMANDS = {
    "doctor": (
        "check this installation and say what to fix",
        "Check the sageattention installation: the library, its ABI and version, the CUDA runtime it was "
        "built with, the driver, each GPU and whether the build covers it; then an accuracy check of "
        "sageattn against torch's SDPA and, on a GPU, a small benchmark. Each problem found is one sentence "
        "with what to do. Exit status 0 when everything checked passed, 1 otherwise. Runs even when "
        "`import sageattention` fails, and says why it does.",
    ),
    "bench": (
        "measure attention throughput (TOPS) and accuracy beside torch SDPA's backends",
        "Attention throughput and accuracy report: sageattn (end to end and its kernel alone) beside "
        "torch SDPA's own backends (cuDNN, flash) in the same run, over sequence lengths and head dims, "
        "and its accuracy against float64 attention; writes a markdown/JSON/PNG report with --out. "
        "Needs a GPU for meaningful numbers (--device cpu runs the CPU implementation).",
    ),
}


def parser() -> argparse.ArgumentParser:
    """The top-level parser: for its help and usage; each command parses its own options."""
    ap = argparse.ArgumentParser(
        prog=PROG,
        description="Command-line tools of sageattention (accurate 8-bit attention). "
        f"`{PROG} COMMAND --help` describes a command's options.",
    )
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, (line, _) in COMMANDS.items():
        sub.add_parser(name, help=line, add_help=False)
    return ap


def _import_error() -> ImportError | None:
    import sageattention

    return sageattention._import_error


def _main(argv: list[str]) -> int:
    ap = parser()
    if argv[:1] in (["-h"], ["--help"]):
        ap.print_help()
        return 0
    if not argv or argv[0] not in COMMANDS:
        ap.print_usage(sys.stderr)
        what = f"unknown command {argv[0]!r}" if argv else "a command is needed"
        print(f"{PROG}: error: {what}; choose from {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    prog, description = f"{PROG} {command}", COMMANDS[command][1]
    if command == "doctor":
        from sageattention.doctor import main

        return main(rest, prog=prog, description=description)
    error = _import_error()
    if error is not None:
        print(f"{prog}: sageattention cannot be imported: {error}\n"
              f"`{PROG} doctor` says why and what to do.", file=sys.stderr)
        return 1
    from sageattention.bench import main

    return main(rest, prog=prog, description=description)


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
