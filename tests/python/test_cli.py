"""Every command-line tool of the repository answers --help with what it does
and exit status 0, and runs nothing else; `python -m sageattention` names its
commands. The tools are found by globbing, so a new script is covered too."""

import concurrent.futures
import glob
import os
import subprocess
import sys

import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_PYTHON = os.path.join(_ROOT, "python")


def _rel(path):
    return os.path.relpath(path, _ROOT)


def _python_scripts():
    found = []
    for pattern in ("scripts/*.py", "bench/*.py", "examples/*.py", "tests/wheel/check_wheel.py",
                    "tests/python/measure_overhead.py"):
        found += [p for p in glob.glob(os.path.join(_ROOT, pattern)) if not os.path.basename(p).startswith("_")]
    return sorted(found)


def _shell_scripts():
    return sorted(glob.glob(os.path.join(_ROOT, "scripts", "*.sh")) + glob.glob(os.path.join(_ROOT, "tests", "*", "*.sh")))


MODULES = [
    ["sageattention"],
    ["sageattention", "doctor"],
    ["sageattention", "bench"],
    ["sageattention.doctor"],
    ["sageattention.bench"],
]
TOOLS = {" ".join(["python -m"] + m): [sys.executable, "-m", *m] for m in MODULES}
TOOLS.update({f"python {_rel(p)}": [sys.executable, p] for p in _python_scripts()})
TOOLS.update({f"bash {_rel(p)}": ["bash", p] for p in _shell_scripts()})


@pytest.fixture(scope="module")
def help_runs(tmp_path_factory):
    """Every tool's --help, run side by side (each Python one imports torch), in
    an empty folder: a tool that ignored --help and wrote files would show there."""
    cwd = tmp_path_factory.mktemp("cli")
    env = dict(os.environ, PYTHONPATH=_PYTHON + (os.pathsep + os.environ["PYTHONPATH"]
                                                 if os.environ.get("PYTHONPATH") else ""))

    def run(cmd):
        return subprocess.run(cmd + ["--help"], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=120, check=False)

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        futures = {name: pool.submit(run, cmd) for name, cmd in TOOLS.items()}
        results = {name: f.result() for name, f in futures.items()}
    return results, cwd


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_help_exits_zero_and_says_what_it_does(tool, help_runs):
    results, cwd = help_runs
    r = results[tool]
    assert r.returncode == 0, f"{tool} --help: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    words = r.stdout.split()
    assert len(words) >= 8, f"{tool} --help says too little:\n{r.stdout}"
    if tool.startswith("python"):
        assert r.stdout.startswith("usage:"), r.stdout
    assert os.listdir(cwd) == [], f"{tool} --help left {os.listdir(cwd)} behind"


def test_the_globs_found_the_tools():
    # An empty glob (a moved folder) would make the test above vacuous.
    names = set(TOOLS)
    for tool in ("python scripts/wheel_version.py", "python bench/bench.py", "python examples/wan_transformer.py",
                 "bash scripts/build_wheel.sh", "bash scripts/test.sh", "bash tests/wheel/test_wheel.sh"):
        assert tool in names, sorted(names)


def test_top_level_help_names_each_command(help_runs):
    out = help_runs[0]["python -m sageattention"].stdout
    assert "doctor" in out and "check this installation" in out
    assert "bench" in out and "throughput" in out
    bench = help_runs[0]["python -m sageattention bench"].stdout
    assert bench.startswith("usage: python -m sageattention bench") and "--tokens" in bench
    doctor = help_runs[0]["python -m sageattention doctor"].stdout
    assert doctor.startswith("usage: python -m sageattention doctor") and "--no-bench" in doctor


def _module(args, **env):
    full = dict(os.environ, PYTHONPATH=_PYTHON, **env)
    return subprocess.run([sys.executable, "-m", "sageattention", *args], env=full, capture_output=True, text=True,
                          timeout=120, check=False)


def test_no_command_or_an_unknown_one_is_a_usage_error():
    for args in ([], ["frobnicate"]):
        r = _module(args)
        assert r.returncode == 2 and r.stderr.startswith("usage: python -m sageattention"), r.stderr
        assert "choose from doctor, bench" in r.stderr


def test_bench_without_a_library_says_so_and_points_to_the_doctor(tmp_path):
    r = _module(["bench", "--device", "cpu"], SAGEATTN_LIBRARY=str(tmp_path / "missing.so"))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "sageattention cannot be imported" in r.stderr and "missing.so" in r.stderr
    assert "python -m sageattention doctor" in r.stderr


def test_demo_binary_help():
    demo = os.path.join(os.path.dirname(os.environ.get("SAGEATTN_LIBRARY", "")), "sageattn-demo")
    if not os.path.isfile(demo):
        pytest.skip(f"no {demo}: the demo is built with the library (cmake --build build)")
    r = subprocess.run([demo, "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0 and r.stdout.startswith("usage: sageattn-demo") and "float64" in r.stdout
    r = subprocess.run([demo, "--no-such-option"], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2 and r.stderr.startswith("usage: sageattn-demo")
