"""tests/release/check_workflow.py on the release workflow and on copies of it
with one thing broken: each breakage must be named."""

import importlib.util
import os

import pytest
import yaml

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_WORKFLOW = os.path.join(_ROOT, ".github", "workflows", "wheels.yml")
spec = importlib.util.spec_from_file_location("check_workflow", os.path.join(_ROOT, "tests", "release", "check_workflow.py"))
cw = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cw)


@pytest.fixture
def workflow():
    with open(_WORKFLOW, encoding="utf-8") as f:
        return yaml.safe_load(f)


def _errors(tmp_path, doc):
    path = tmp_path / "wheels.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return cw.check(str(path))


def test_the_release_workflow_passes():
    assert cw.check(_WORKFLOW) == []


def test_matrix_rows_follow_include_rules(workflow):
    rows = cw.matrix_rows(workflow["jobs"]["build-windows"])
    assert [(r["cuda"], r["cuda_major"]) for r in rows] == [("cu13", "13"), ("cu12", "12")]
    rows = cw.matrix_rows({"strategy": {"matrix": {"a": [1, 2], "b": ["x"], "include": [{"a": 1, "c": 3}, {"a": 9}]}}})
    assert rows == [{"a": 1, "b": "x", "c": 3}, {"a": 2, "b": "x"}, {"a": 9}]


def test_without_the_windows_jobs(tmp_path, workflow):
    del workflow["jobs"]["build-windows"], workflow["jobs"]["test-windows"]
    errors = _errors(tmp_path, workflow)
    assert "no job builds wheel-cu13-win_amd64" in errors and "no job builds wheel-cu12-win_amd64" in errors
    assert "no windows-2022 job builds the win_amd64 wheels" in errors
    assert "no windows-2022 job tests the win_amd64 wheels" in errors


def test_windows_test_job_must_need_the_build(tmp_path, workflow):
    del workflow["jobs"]["test-windows"]["needs"]
    errors = _errors(tmp_path, workflow)
    assert "job test-windows downloads 'wheel-cu13-win_amd64' without needing ['build-windows']" in errors


def test_untested_wheel(tmp_path, workflow):
    workflow["jobs"]["test-windows"]["strategy"]["matrix"]["cuda"] = ["cu13"]
    assert "artifact 'wheel-cu12-win_amd64' is uploaded but no job tests it" in _errors(tmp_path, workflow)


def test_unknown_matrix_key_input_and_runner(tmp_path, workflow):
    job = workflow["jobs"]["build-windows"]
    job["steps"][3]["env"]["CUDA_VERSION"] = "${{ matrix.cuda_verison }}"
    job["steps"][4]["env"]["SAGEATTN_CUDA_ARCHS"] = "${{ inputs.archs }}"
    job["runs-on"] = "windows-2019"
    errors = _errors(tmp_path, workflow)
    assert "job build-windows: matrix.cuda_verison is not in its matrix" in errors
    assert "job build-windows: inputs.archs is not a workflow_dispatch input" in errors
    assert "job build-windows: runs-on 'windows-2019' is not a GitHub-hosted runner label this project uses" in errors


def test_steps_the_windows_build_needs(tmp_path, workflow):
    job = workflow["jobs"]["build-windows"]
    job["steps"] = [s for s in job["steps"] if "msvc-dev-cmd" not in s.get("uses", "")]
    job["steps"][2]["run"] = job["steps"][2]["run"].replace("scripts/cuda_redist.py", "scripts/missing.py")
    errors = _errors(tmp_path, workflow)
    assert "job build-windows does not use msvc-dev-cmd (to put MSVC on PATH)" in errors
    assert "job build-windows does not use scripts/cuda_redist.py (to install the CUDA toolkit)" in errors
    assert "job build-windows, step 3: runs scripts/missing.py, which is not in the repository" in errors


def test_windows_import_test_needs_its_steps(tmp_path, workflow):
    job = workflow["jobs"]["test-windows"]
    for step in job["steps"]:
        if "run" in step:
            step["run"] = step["run"].replace("smoke.py", "other.py").replace("download.pytorch.org/whl/cpu", "pypi.org")
    errors = _errors(tmp_path, workflow)
    assert "job test-windows does not run tests/wheel/smoke.py" in errors
    assert "job test-windows does not run download.pytorch.org/whl/cpu" in errors


def test_step_shape(tmp_path, workflow):
    steps = workflow["jobs"]["test-windows"]["steps"]
    steps[0]["uses"] = "actions/checkout"
    steps[1]["run"] = "true"
    steps[2]["shel"] = "bash"
    errors = _errors(tmp_path, workflow)
    assert "job test-windows, step 1: unpinned or malformed uses: actions/checkout" in errors
    assert "job test-windows, step 2: needs exactly one of uses/run" in errors
    assert "job test-windows, step 3: unknown key 'shel'" in errors


def test_scripts_are_written_for_shellcheck(tmp_path, workflow):
    out = tmp_path / "scripts"
    out.mkdir()
    workflow["jobs"]["test-windows"]["steps"][3]["run"] += 'echo "${{ matrix.cuda }}"\n'
    assert _errors_with_scripts(tmp_path, workflow, out) == []
    assert "cuda_redist.py" in (out / "build-windows-step4.sh").read_text()
    script = (out / "test-windows-step4.sh").read_text()
    assert script.startswith("#!/usr/bin/env bash") and 'echo "GHA_EXPRESSION"' in script
    assert not any("${{" in f.read_text() for f in out.iterdir())


def _errors_with_scripts(tmp_path, doc, out):
    path = tmp_path / "wheels.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return cw.check(str(path), str(out))
