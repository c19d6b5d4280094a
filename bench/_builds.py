"""What bench/ab.py and bench/same.py share: builds named on the command line, and one run
of a build in its own process (the library is loaded once a process, through
SAGEATTN_LIBRARY), whose rows come back as `ROW <json>` lines on its stdout."""
import json
import os
import subprocess
import sys


def parse_libs(ap, specs):
    """[(name, path)] from --lib NAME=PATH arguments; two or more, or an argparse error."""
    libs = [x.split("=", 1) for x in specs]
    if len(libs) < 2 or any(len(x) != 2 for x in libs):
        ap.error("give two or more builds as --lib NAME=PATH")
    return libs


def emit(row):
    """A worker's row, for run_build."""
    print("ROW " + json.dumps(row), flush=True)


def run_build(name, path, script, args):
    """Runs `script --worker args` with build `path` loaded; its rows (a failed worker's
    stderr is printed, and its rows so far are kept)."""
    env = dict(os.environ, SAGEATTN_LIBRARY=os.path.abspath(path))
    p = subprocess.run([sys.executable, os.path.abspath(script), "--worker", *args], env=env,
                       capture_output=True, text=True)
    if p.returncode:
        print(f"# {name} exited {p.returncode}:\n{p.stderr[-2000:]}", flush=True)
    return [json.loads(line[4:]) for line in p.stdout.splitlines() if line.startswith("ROW ")]
