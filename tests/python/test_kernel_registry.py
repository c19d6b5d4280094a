"""src/cuda/kernels.py lists every attention-kernel instance once; the instance files, the
wgmma wrappers and kernels.hpp (the dispatch's lists) are generated from it and committed.
These tests fail when a committed output is not what the lists give."""

import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CUDA = os.path.join(ROOT, "src", "cuda")


def run_check(cuda_dir):
    return subprocess.run(
        [sys.executable, os.path.join(cuda_dir, "kernels.py"), "--check"], capture_output=True, text=True
    )


def test_committed_outputs_are_what_the_registry_gives():
    r = run_check(CUDA)
    assert r.returncode == 0, r.stderr


def copy_registry(tmp_path):
    """kernels.py, its generators and their committed outputs, in a scratch src/cuda."""
    cuda = tmp_path / "cuda"
    cuda.mkdir()
    shutil.copy(os.path.join(CUDA, "kernels.py"), cuda)
    shutil.copy(os.path.join(CUDA, "kernels.hpp"), cuda)
    for folder in ("instances", "sm90", "ptx"):
        shutil.copytree(os.path.join(CUDA, folder), cuda / folder)
    return cuda


def test_a_list_changed_without_its_outputs_is_caught(tmp_path):
    cuda = copy_registry(tmp_path)
    text = (cuda / "kernels.py").read_text()
    (cuda / "kernels.py").write_text(text.replace("MMA_HEAD_DIMS = (64, 128, 256)", "MMA_HEAD_DIMS = (64, 128, 192, 256)"))
    r = run_check(str(cuda))
    assert r.returncode != 0
    assert "kernels.hpp differs" in r.stderr and "instances/attention_d192_bf16_pv_fp8.cu is missing" in r.stderr
    # Running the registry writes them, and the check passes again.
    subprocess.run([sys.executable, str(cuda / "kernels.py")], check=True)
    assert "{64, 128, 192, 256}" in (cuda / "kernels.hpp").read_text()
    assert run_check(str(cuda)).returncode == 0


def test_an_instance_file_the_registry_does_not_list_is_caught(tmp_path):
    cuda = copy_registry(tmp_path)
    shutil.copy(cuda / "sm90" / "attention_wgmma_d64_fp16.cu", cuda / "sm90" / "attention_wgmma_d96_fp16.cu")
    r = run_check(str(cuda))
    assert r.returncode != 0 and "sm90/attention_wgmma_d96_fp16.cu is no instance kernels.py lists" in r.stderr
