"""Attention throughput and accuracy beside torch SDPA's backends, same run.

The benchmark lives in the package (sageattention/bench.py) so that an
installed wheel has it too: `python -m sageattention bench`. This script keeps
the old command working with the same options:

    python bench/bench.py [--tokens 32768] [--heads 32] [--dims 64 128]
                          [--lens 1024 2048 4096 8192 16384 32768] [--json out.json]
                          [--out DIR] ...   (see python -m sageattention bench --help)
"""
import sys

from sageattention.bench import main

if __name__ == "__main__":
    sys.exit(main(prog="python bench/bench.py"))
