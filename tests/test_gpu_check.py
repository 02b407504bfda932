"""tools/gpu_check.sh --device cpu runs every check's code without a GPU, and a planted difference fails its row."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.test_trainers import registered_methods, training_methods

REPO = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^\| (compare|precision|torchrun|speed) \| (.+?) \| (PASS|FAIL|SKIP) \| (.*) \|$")


def gpu_check(out_dir: Path, *args: str, **extra_env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHON": sys.executable, "OUT_DIR": str(out_dir), **extra_env}
    return subprocess.run(["bash", str(REPO / "tools" / "gpu_check.sh"), "--device", "cpu", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=900)


def table(stdout: str) -> dict[tuple[str, str], tuple[str, str]]:
    """(check, what) -> (result, detail) from the pass/fail table at the end of the output."""
    rows = {}
    for line in stdout.splitlines():
        if match := ROW.match(line):
            rows[match[1], match[2]] = (match[3], match[4])
    return rows


def test_the_gpu_check_passes_on_a_cpu_and_lists_what_needs_cuda(tmp_path):
    proc = gpu_check(tmp_path)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    rows = table(proc.stdout)
    assert proc.stdout.rstrip().endswith("-> PASS")
    for name in registered_methods():
        result, detail = rows["compare", name]
        assert result == "PASS", detail
        # Two CPU builds run the same float operations: they agree exactly.
        assert re.fullmatch(r".* on a second CPU build vs CPU: losses 0\.0e\+00, (gradients 0\.0e\+00, )?"
                            r"logits 0\.0e\+00 \(tolerance 1e-04\)", detail), detail
        assert ("gradients" in detail) == (name in training_methods())
    assert rows["precision", "fp32"][0] == "PASS"
    assert rows["precision", "bf16"][0] == "PASS" and "within 1e-01 of CPU fp32" in rows["precision", "bf16"][1]
    for prec in ("amp", "fp16"):  # a CPU runs them in fp32 by default
        result, detail = rows["precision", prec]
        assert result == "SKIP" and "needs CUDA" in detail, detail
    assert rows["torchrun", "gloo group of 1"][0] == "PASS"
    assert rows["torchrun", "train.py, 1 process"][0] == "PASS"
    speed = {what: result for (check, what), (result, _) in rows.items() if check == "speed"}
    assert [what for what, result in speed.items() if result == "PASS"] == [
        what for what in speed if what.endswith("tiny CLIP, cpu fp32, train phase")
    ]
    assert sum(result == "SKIP" for result in speed.values()) == 6  # the random ViT-B/16 runs
    records = [json.loads(line) for line in (tmp_path / "gpu_check.jsonl").read_text().splitlines()]
    assert len(records) == 1 and records[0]["train_step_s"] > 0
    assert "| train step s |" in proc.stdout  # the speed table, printed before the pass/fail table
    assert not any(result == "FAIL" for result, _ in rows.values())


def test_a_planted_difference_fails_its_row_and_the_exit_code(tmp_path):
    perturbed, untouched = training_methods()[:2]
    proc = gpu_check(tmp_path, "--checks", "compare", "--trainer", perturbed, untouched, "--perturb", perturbed)
    assert proc.returncode == 1, (proc.stdout + proc.stderr)[-4000:]
    rows = table(proc.stdout)
    result, detail = rows["compare", perturbed]
    assert result == "FAIL"
    errors = dict(re.findall(r"(losses|gradients|logits) ([0-9.e+-]+)", detail))
    assert set(errors) == {"losses", "gradients", "logits"}
    assert all(float(e) > 1e-4 for e in errors.values()), detail  # each comparison sees the 1 % change
    assert rows["compare", untouched][0] == "PASS"
    assert rows["torchrun", "all"][0] == rows["speed", "all"][0] == "SKIP"
    assert proc.stdout.rstrip().endswith("-> FAIL")


def test_under_the_cpu_fp16_switch_every_trainer_passes_fp16_and_amp(tmp_path):
    # The GPU's half-precision paths on a CPU: fp16 autocast, a GradScaler, and (PREC fp16) fp16 backbone weights.
    proc = gpu_check(tmp_path, "--checks", "precision", GOPRO_TEST_CPU_FP16="1")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    rows = table(proc.stdout)
    n = len(registered_methods())
    for prec in ("fp32", "amp", "fp16", "bf16"):
        result, detail = rows["precision", prec]
        assert result == "PASS" and detail.startswith(f"{n} trainers, 3 updates: losses finite"), detail
