"""tools/pretrain_world_clip.py: a tiny run end to end, in fp32 and under bf16 autocast."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

import pretrain_world_clip  # noqa: E402


def _tiny_run(tmp_path: Path, prec: str) -> dict:
    args = pretrain_world_clip.parse_args([
        "--out", str(tmp_path / f"{prec}.pt"), "--prec", prec, "--steps", "2", "--batch-size", "8", "--warmup", "1",
        "--workers", "0", "--threads", "1", "--check-per-class", "1", "--embed-dim", "32", "--vision-width", "64",
        "--vision-layers", "1", "--text-width", "64", "--text-layers", "1",
    ])
    return pretrain_world_clip.train(args)


def test_bf16_pretraining_runs_under_autocast_and_writes_the_same_checkpoint_format(tmp_path: Path) -> None:
    fp32, bf16 = _tiny_run(tmp_path, "fp32"), _tiny_run(tmp_path, "bf16")
    # same seed and batches: the losses agree to bf16 rounding, and differ, or autocast never engaged
    assert math.isfinite(bf16["final_loss"]) and abs(bf16["final_loss"] - fp32["final_loss"]) < 0.05
    assert bf16["final_loss"] != fp32["final_loss"]
    state = torch.load(tmp_path / "bf16.pt", map_location="cpu")
    assert {t.dtype for t in state.values() if torch.is_tensor(t) and t.is_floating_point()} == {torch.float16}
    assert set(bf16["zeroshot_check"]) == set(fp32["zeroshot_check"])
