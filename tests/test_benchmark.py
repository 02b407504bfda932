"""Smoke test of tools/benchmark.py: one step on a tiny CLIP prints a JSON line with every reported key."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REQUIRED_KEYS = {
    "trainer", "classes", "batch_size", "train_step_s", "eval_s_per_image", "peak_rss_mb",
    "peak_rss_train_mb", "peak_rss_eval_mb", "image_tower_s", "text_tower_s", "n_prompts", "cut_len",
    "threads", "device", "precision", "step_over_necessary", "load_avg_train",
}


def test_benchmark_prints_one_json_line_with_all_keys(tiny_clip_path):
    command = [
        sys.executable, str(REPO / "tools" / "benchmark.py"), "--backbone", tiny_clip_path, "--trainer", "GOPro",
        "--classes", "3", "--batch-size", "2", "--steps", "1", "--warmup", "0", "--threads", "1", "--json",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout
    record = json.loads(lines[0])
    assert REQUIRED_KEYS <= set(record), sorted(REQUIRED_KEYS - set(record))
    assert record["trainer"] == "GOPro" and record["classes"] == 3 and record["batch_size"] == 2
    # 3 text views x 2 images x 3 classes; "a photo of a" + a one-token name + "." cut to SOS..EOT.
    assert record["n_prompts"] == 18 and record["cut_len"] == 8
    assert record["train_step_s"] > 0 and record["eval_s_per_image"] > 0 and record["peak_rss_mb"] > 0
