"""tools/world_probe.py: one JSON line with the world's criteria figures, from a real (tiny) run."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

import world_probe  # noqa: E402


def test_probe_prints_one_json_line_with_the_criteria(tiny_clip_path, tmp_path, capsys) -> None:
    world_probe.main(["--seeds", "1", "--json", "--clip", tiny_clip_path, "--data", str(tmp_path),
                      "--datasets", "world_counts", "DATASET.WORLD.N_TRAIN", "16", "DATASET.WORLD.N_VAL", "1",
                      "DATASET.WORLD.N_TEST", "3", "OPTIM.MAX_EPOCH", "1"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["datasets"] == ["world_counts"] and result["seeds"] == [1]
    for key in ("zs_base", "zs_new", "probe_base", "coop_base", "coop_new"):
        assert 0.0 <= result[key] <= 100.0
        # 3 base (or new) classes x 3 test images: every accuracy is a multiple of 1/9
        assert abs(result[key] * 9 / 100 - round(result[key] * 9 / 100)) < 1e-3, (key, result[key])
    assert result["probe_minus_zs"] == pytest.approx(result["probe_base"] - result["zs_base"], abs=0.02)
    assert result["per_dataset"]["world_counts"]["coop_new"] == result["coop_new"]
    assert isinstance(result["criteria_met"], bool)


def test_probe_names_the_valid_datasets(tiny_clip_path) -> None:
    with pytest.raises(SystemExit, match=r"unknown world dataset\(s\) \['world_count'\]; valid: .*'world_counts'"):
        world_probe.main(["--clip", tiny_clip_path, "--datasets", "world_count"])


def test_probe_draws_the_seeds_few_shot_split_whatever_ran_before(tiny_clip_path, tmp_path) -> None:
    """The probe's 16 shots are the ones the seed picks (as in train.py), not those of the process's history."""
    import pickle
    import random

    drawn = []
    for prior in (0, 1):
        root = tmp_path / f"root{prior}"
        random.seed(prior)  # a different state of Python's ``random`` before the probe starts
        world_probe.main(["--seeds", "1", "--json", "--clip", tiny_clip_path, "--data", str(root),
                          "--datasets", "world_counts", "DATASET.WORLD.N_TRAIN", "40", "DATASET.WORLD.N_VAL", "4",
                          "DATASET.WORLD.N_TEST", "3", "OPTIM.MAX_EPOCH", "1"])
        with open(root / "world" / "counts" / "split_fewshot" / "shot_16-seed_1.pkl", "rb") as f:
            cache = pickle.load(f)
        drawn.append([str(Path(d.impath).relative_to(root)) for d in cache["train"] + cache["val"]])
    assert len(drawn[0]) == 6 * (16 + 4)  # all six classes are drawn; base-to-new subsamples after
    assert drawn[0] == drawn[1]
