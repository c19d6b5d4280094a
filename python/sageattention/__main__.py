"""`python -m sageattention doctor [--no-bench] [--quick] [--json]`.

Python imports the package before it runs this module; when the library
cannot be loaded, the package keeps the error instead of raising it (only
under `python -m sageattention`, see __init__.py), so the doctor can report
why `import sageattention` fails and what to do.
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
