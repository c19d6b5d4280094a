#!/usr/bin/env python3
"""Static checks of .github/workflows/wheels.yml beyond its schema: what
actionlint would find in its expressions and structure, and what the release
promises (docs/INSTALL.md): a Linux and a Windows wheel per CUDA major, each
built by scripts/build_wheel.sh and tested on a clean machine.

    python3 tests/release/check_workflow.py WORKFLOW [--scripts DIR]

--scripts DIR writes each bash `run:` script to DIR (expressions replaced by a
plain word) for shellcheck. Exits non-zero, naming every finding.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# GitHub-hosted runner labels this project may use.
RUNNERS = {"ubuntu-24.04", "ubuntu-24.04-arm", "ubuntu-22.04", "ubuntu-latest", "windows-2022", "windows-2025",
           "windows-latest"}
SHELLS = {"bash", "sh", "pwsh", "powershell", "cmd", "python"}
JOB_KEYS = {"name", "needs", "runs-on", "timeout-minutes", "strategy", "steps", "defaults", "env", "if",
            "permissions", "outputs", "continue-on-error", "container", "services", "concurrency", "environment"}
STEP_KEYS = {"name", "id", "uses", "run", "with", "env", "if", "shell", "working-directory", "continue-on-error",
             "timeout-minutes"}
CUDA_MAJORS = {"cu13", "cu12"}
EXPR = re.compile(r"\$\{\{(.*?)\}\}", re.S)


def matrix_rows(job: dict) -> list[dict]:
    """Every combination the job's matrix runs (its lists' product, then include)."""
    matrix = (job.get("strategy") or {}).get("matrix") or {}
    axes = {k: v for k, v in matrix.items() if k not in ("include", "exclude")}
    combos = [dict(zip(axes, values)) for values in itertools.product(*axes.values())] if axes else []
    added = []
    for extra in matrix.get("include") or []:
        # An include entry extends the combinations whose matrix values it does not
        # change; one that extends none is a combination of its own.
        matches = [c for c in combos if all(c[k] == v for k, v in extra.items() if k in axes)]
        for c in matches:
            c.update(extra)
        if not matches:
            added.append(dict(extra))
    rows = combos + added
    for gone in matrix.get("exclude") or []:
        rows = [r for r in rows if not all(r.get(k) == v for k, v in gone.items())]
    return rows or [{}]


def expand(text: str, row: dict) -> str:
    return EXPR.sub(lambda m: str(row.get(m.group(1).strip().removeprefix("matrix."), m.group(0))), text)


def check(path: str, scripts_dir: str | None = None) -> list[str]:
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    errors: list[str] = []
    on = doc.get("on", doc.get(True))  # YAML 1.1 reads a bare `on:` key as True
    if not on:
        errors.append("no `on:` triggers")
    inputs = set((((on or {}).get("workflow_dispatch") or {}).get("inputs") or {}) if isinstance(on, dict) else ())
    jobs = doc.get("jobs") or {}
    if not jobs:
        errors.append("no jobs")
    uploads: dict[str, set] = {}
    downloads: dict[str, set] = {}
    runs: dict[str, str] = {}
    for name, job in jobs.items():
        where = f"job {name}"
        for key in set(job) - JOB_KEYS:
            errors.append(f"{where}: unknown key {key!r}")
        needs = job.get("needs", [])
        needs = [needs] if isinstance(needs, str) else needs
        for need in needs:
            if need not in jobs:
                errors.append(f"{where}: needs unknown job {need}")
        rows = matrix_rows(job)
        keys = set().union(*rows)
        runs_on = job.get("runs-on")
        labels = {expand(str(runs_on), r) for r in rows}
        if runs_on is None:
            errors.append(f"{where}: no runs-on")
        for label in labels:
            ev = re.fullmatch(r"\$\{\{\s*matrix\.arch == 'aarch64' && '([\w.-]+)' \|\| '([\w.-]+)'\s*\}\}", label)
            for one in ev.groups() if ev else (label,):
                if one not in RUNNERS:
                    errors.append(f"{where}: runs-on {one!r} is not a GitHub-hosted runner label this project uses")
        default_shell = ((job.get("defaults") or {}).get("run") or {}).get("shell", "bash")
        text = yaml.safe_dump(job)
        for expr in EXPR.findall(text):
            for ctx, key in re.findall(r"\b(matrix|inputs|needs)\.([A-Za-z_][\w-]*)", expr):
                if ctx == "matrix" and key not in keys:
                    errors.append(f"{where}: matrix.{key} is not in its matrix")
                if ctx == "inputs" and key not in inputs:
                    errors.append(f"{where}: inputs.{key} is not a workflow_dispatch input")
                if ctx == "needs" and key not in needs:
                    errors.append(f"{where}: needs.{key} is not among its needs")
        steps = job.get("steps") or []
        if not steps:
            errors.append(f"{where}: no steps")
        for i, step in enumerate(steps, 1):
            at = f"{where}, step {i}"
            for key in set(step) - STEP_KEYS:
                errors.append(f"{at}: unknown key {key!r}")
            if ("uses" in step) == ("run" in step):
                errors.append(f"{at}: needs exactly one of uses/run")
            uses = step.get("uses")
            if uses is not None and not re.fullmatch(r"[\w.-]+/[\w./-]+@[\w.-]+", uses):
                errors.append(f"{at}: unpinned or malformed uses: {uses}")
            shell = step.get("shell", default_shell)
            if shell not in SHELLS:
                errors.append(f"{at}: unknown shell {shell!r}")
            for row in rows:
                with_ = step.get("with") or {}
                if uses and uses.startswith("actions/upload-artifact@"):
                    uploads.setdefault(expand(str(with_.get("name", "")), row), set()).add(name)
                if uses and uses.startswith("actions/download-artifact@"):
                    downloads.setdefault(expand(str(with_.get("name", "")), row), set()).add(name)
            script = step.get("run")
            if script is None:
                continue
            runs[name] = runs.get(name, "") + script + "\n"
            for ref in re.findall(r"\b((?:scripts|tests|release)/[\w./-]+\.(?:py|sh|hcl))\b", script):
                if not os.path.isfile(os.path.join(ROOT, ref)):
                    errors.append(f"{at}: runs {ref}, which is not in the repository")
            if scripts_dir and shell == "bash":
                body = EXPR.sub("GHA_EXPRESSION", script)
                with open(os.path.join(scripts_dir, f"{name}-step{i}.sh"), "w", encoding="utf-8") as f:
                    f.write("#!/usr/bin/env bash\nset -eo pipefail\n" + body)
    for artifact, consumers in downloads.items():
        producers = uploads.get(artifact)
        if not producers:
            errors.append(f"artifact {artifact!r} is downloaded by {sorted(consumers)} but no job uploads it")
            continue
        for consumer in consumers:
            needs = jobs[consumer].get("needs", [])
            if not producers & set([needs] if isinstance(needs, str) else needs):
                errors.append(f"job {consumer} downloads {artifact!r} without needing {sorted(producers)}")
    for artifact in uploads:
        if artifact not in downloads:
            errors.append(f"artifact {artifact!r} is uploaded but no job tests it")
    errors += release_promises(jobs, uploads, downloads, runs)
    return errors


def release_promises(jobs: dict, uploads: dict, downloads: dict, runs: dict) -> list[str]:
    """A wheel per CUDA major for linux x86_64, linux aarch64 and win_amd64,
    each built by build_wheel.sh and tested on another runner."""
    errors = []
    for platform in ("x86_64", "aarch64", "win_amd64"):
        for cuda in sorted(CUDA_MAJORS):
            artifact = f"wheel-{cuda}-{platform}"
            if artifact not in uploads:
                errors.append(f"no job builds {artifact}")
            elif artifact not in downloads:
                errors.append(f"no job tests {artifact}")
    windows_builds = [n for n, j in jobs.items() if j.get("runs-on") == "windows-2022" and any(
        a.endswith("-win_amd64") for a, producers in uploads.items() if n in producers)]
    windows_tests = [n for n, j in jobs.items() if j.get("runs-on") == "windows-2022" and any(
        a.endswith("-win_amd64") for a, consumers in downloads.items() if n in consumers)]
    if not windows_builds:
        errors.append("no windows-2022 job builds the win_amd64 wheels")
    for n in windows_builds:
        for needed, why in (
            ("scripts/cuda_redist.py", "install the CUDA toolkit"),
            ("scripts/build_wheel.sh", "build and check the wheel the way Linux does"),
            ("msvc-dev-cmd", "put MSVC on PATH"),
        ):
            if needed not in runs.get(n, "") and needed not in yaml.safe_dump(jobs[n]):
                errors.append(f"job {n} does not use {needed} (to {why})")
    if not windows_tests:
        errors.append("no windows-2022 job tests the win_amd64 wheels")
    for n in windows_tests:
        script = runs.get(n, "")
        for needed in ("tests/wheel/check_wheel.py", "tests/wheel/smoke.py", "download.pytorch.org/whl/cpu",
                       "--no-deps"):
            if needed not in script:
                errors.append(f"job {n} does not run {needed}")
    return errors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workflow")
    ap.add_argument("--scripts", help="write the bash run: scripts here, for shellcheck")
    args = ap.parse_args()
    errors = check(args.workflow, args.scripts)
    for e in errors:
        print(f"{args.workflow}: {e}", file=sys.stderr)
    print(f"{args.workflow}: {'OK' if not errors else f'{len(errors)} problems'}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
