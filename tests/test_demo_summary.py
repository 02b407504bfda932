"""The demo's plan (trainers, protocols, schedules) and its closing summary, without training anything."""
import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import demo  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _write(tree: Path, task: str, tables: list) -> None:
    (tree / task).mkdir(parents=True)
    (tree / task / "results.json").write_text(json.dumps({"tables": tables}))


def _stat(mean, std=0.0):
    return {"mean": mean, "std": std}


def test_summary_has_a_row_per_trainer_with_seed_spread_and_marks_missing_runs(tmp_path):
    _write(tmp_path, "base2new", [
        {"trainer": "CoOp", "average": {"base": 60.0, "new": 40.0, "hm": 48.0, "base_std": 1.5, "new_std": 2.0,
                                        "hm_std": 0.5, "datasets": 5, "seeds": 3}},
        {"trainer": "GOPro", "average": {"base": 70.0, "new": 50.0, "hm": 58.333, "base_std": None, "new_std": None,
                                         "hm_std": None, "datasets": 1, "seeds": 0}},
    ])
    rows = [{"dataset": "world", "role": "source", "accuracy": _stat(44.0, 1.0)},
            {"dataset": "world_sketch", "role": "target", "accuracy": _stat(20.0, 3.0)}]
    for task in ("cross-dataset", "domain-generalization"):
        _write(tmp_path, task, [
            {"trainer": "CoOp", "source": "world", "rows": rows, "target_average": 20.0,
             "target_average_std": 3.0, "target_average_seeds": 3},
            {"trainer": "GOPro", "source": "world", "rows": rows[:1], "target_average": None,
             "target_average_std": None, "target_average_seeds": 0},
        ])
    _write(tmp_path, "few-shot", [
        {"trainer": "CoOp", "shots": ["1", "4"],
         "average": {"1": {"mean": 30.0, "std": 2.0, "seeds": 3}, "4": {"mean": 45.0, "std": 1.0, "seeds": 3}}},
        {"trainer": "ZeroshotCLIP", "shots": ["0"], "average": {"0": {"mean": 25.0, "std": 0.0, "seeds": 1}}},
    ])
    text = demo.summary(str(tmp_path))
    assert "| CoOp | 60.00 ± 1.50 | 40.00 ± 2.00 | 48.00 ± 0.50 | 5 | 3 |" in text
    assert "| GOPro | 70.00 | 50.00 | 58.33 | 1 | 0 |" in text  # no std where no seed has both
    assert "| Trainer | world (source) | world_sketch | target avg | seeds |" in text
    assert text.count("| CoOp | 44.00 ± 1.00 | 20.00 ± 3.00 | 20.00 ± 3.00 | 3 |") == 2  # both transfer tasks
    assert "| GOPro | 44.00 ± 1.00 | — | — | 0 |" in text
    assert "| Trainer | 0 shots | 1 shots | 4 shots |" in text  # shots in numeric order, zero-shot first
    assert "| CoOp | — | 30.00 ± 2.00 (n=3) | 45.00 ± 1.00 (n=3) |" in text
    assert "| ZeroshotCLIP | 25.00 ± 0.00 (n=1) | — | — |" in text
    assert [line for line in text.splitlines() if line.startswith("### ")] == [
        f"### {task}: all trainers (average, mean ± std over seeds)" for task in demo.TASKS]


def test_trainers_are_every_registered_one_with_a_world_config():
    from dassl.engine import TRAINER_REGISTRY

    found = demo.available_trainers("world")
    with_config = [n for n in TRAINER_REGISTRY.registered_names()
                   if (REPO / "configs" / "trainers" / n / "world.yaml").is_file()]
    assert list(found) == with_config
    assert {"ZeroshotCLIP", "CoOp", "CoCoOp", "GOPro", "MaPLe"} <= set(found)
    assert demo.select_trainers(None, found, "world") == found
    assert demo.select_trainers(" CoOp,MaPLe ", found, "world") == ("CoOp", "MaPLe")
    with pytest.raises(SystemExit, match="NoSuchMethod is not a registered trainer with a 'world' config"):
        demo.select_trainers("CoOp,NoSuchMethod", found, "world")


def test_plan_runs_every_protocol_for_every_trainer_heaviest_chain_first():
    chains = demo.plan(("ZeroshotCLIP", "CoOp"), demo.DEMO)
    few_shot, base2new = demo.DEMO.few_shot[0], demo.DEMO.base2new[0]
    for trainer in ("ZeroshotCLIP", "CoOp"):
        calls = {(s.script, s.task, s.dataset) for chain in chains for s in chain if s.trainer == trainer}
        assert calls == {("train", "base2new", base2new), ("test", "base2new", base2new),
                         ("train", "cross-dataset", "world"), ("test", "cross-dataset", "world"),
                         ("train", "domain-generalization", "world"), ("test", "domain-generalization", "world"),
                         ("train", "few-shot", few_shot)}
    # One chain trains cross-dataset before domain generalization, so train.sh reuses its source run.
    transfer = [[(s.script, s.task) for s in c] for c in chains if c[0].task == "cross-dataset"]
    assert transfer == [[("train", "cross-dataset"), ("test", "cross-dataset"),
                         ("train", "domain-generalization"), ("test", "domain-generalization")]] * 2
    # Few-shot: a call per number of shots for CoOp; one for ZeroshotCLIP, which train.sh evaluates once.
    shots = [(c[0].trainer, c[0].shots) for c in chains if c[0].task == "few-shot"]
    assert shots == [("CoOp", "4"), ("ZeroshotCLIP", "1 4"), ("CoOp", "1")]
    # Heaviest first: transfer chains, then few-shot (more shots first), then base2new; ZeroshotCLIP after
    # its equals.
    assert [c[0].task for c in chains] == ["cross-dataset"] * 2 + ["few-shot"] * 3 + ["base2new"] * 2
    assert [c[0].trainer for c in chains[:2]] == ["CoOp", "ZeroshotCLIP"]
    env = demo.script_env(demo.parse_args([]), chains[2][0], demo.DEMO)
    assert env["SHOTS"] == "4"


def test_full_schedule_covers_every_world_dataset_and_the_demo_is_a_reduction_of_it():
    world = {p.stem for p in (REPO / "configs" / "datasets").glob("world*.yaml")}
    full = demo.FULL
    assert set(demo.datasets_of(full)) == world
    assert set(full.base2new) == set(full.few_shot) == world - set(full.dg_targets)
    assert (full.shots, full.seeds, full.few_shot_shots) == (16, "1 2 3", "1 2 4 8 16")
    assert set(demo.datasets_of(demo.DEMO)) < world
    assert demo.DEMO.seeds == "1" and len(demo.DEMO.few_shot_shots.split()) >= 2  # a curve needs two points
    args = demo.parse_args(["--full", "--seeds", "1"])
    assert demo.schedule_of(args) == replace(full, seeds="1")
    assert demo.schedule_of(demo.parse_args([])) == demo.DEMO


def test_script_env_gives_each_protocol_its_shots_and_targets(tmp_path):
    args = demo.parse_args(["--output", str(tmp_path), "--jobs", "1", "--opts", "OPTIM.MAX_EPOCH 1"])
    schedule = demo.DEMO

    def env(task):
        return demo.script_env(args, demo.Step("train", "CoOp", task, "world"), schedule)

    assert env("few-shot")["SHOTS"] == schedule.few_shot_shots
    assert env("base2new")["SHOTS"] == str(schedule.shots)
    assert env("cross-dataset")["TARGETS"] == " ".join(schedule.cross_targets)
    assert env("domain-generalization")["TARGETS"] == " ".join(schedule.dg_targets)
    assert env("base2new")["TRAINER"] == "CoOp" and env("base2new")["SEEDS"] == schedule.seeds
    assert env("base2new")["OPTS"].endswith("world_clip_vit.pt OPTIM.MAX_EPOCH 1")
