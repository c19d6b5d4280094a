"""`python -m sageattention doctor [--no-bench] [--quick] [--json]`.

Imports nothing of the package up front, so the doctor can report why
`import sageattention` fails.
"""

import sys

_USAGE = "usage: python -m sageattention doctor [--no-bench] [--quick] [--json]"


def _main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(_USAGE)
        return 0 if argv else 2
    if argv[0] != "doctor":
        print(f"unknown command {argv[0]!r}\n{_USAGE}", file=sys.stderr)
        return 2
    from sageattention.doctor import main

    return main(argv[1:])


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
