"""The demo's plan (trainers, protocols, schedules) and its closing summary, without training anything."""
import contextlib
import io
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from tests.test_results import write_log
from tools import results

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import demo  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _run(tree: Path, trainer: str, dataset: str, shots: str, seed: int, name: str, accuracy: float,
         at_init: float | None = None) -> None:
    """A run folder of the scripts' layout whose log holds a result (and, optionally, the accuracy at init)."""
    run = tree / trainer / "world" / dataset / f"shots_{shots}" / f"seed{seed}" / name
    write_log(run, accuracy)
    if at_init is not None:
        log = run / "log.txt"
        log.write_text(f"* accuracy at initialisation: {at_init}%\n" + log.read_text())


def _results(output: Path, task: str) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        assert results.main([str(output / task)]) == 0


def test_summary_has_a_row_per_trainer_with_at_init_and_seed_spread(tmp_path):
    """From the results.json files tools/results.py writes: a row per trainer and task, "at init" beside the
    result (zero-shot's is its own figure), one seed without a spread."""
    b2n, cross, dg, few = (tmp_path / task for task in demo.TASKS)
    for seed, offset in ((1, -1.0), (2, 0.0), (3, 1.0)):
        _run(b2n, "CoOp", "world_shades", "4", seed, "train_base", 60.0 + offset, at_init=41.0)
        _run(b2n, "CoOp", "world_shades", "4", seed, "test_new", 40.0 + offset)
    _run(b2n, "ZeroshotCLIP", "world_shades", "0", 1, "train_base", 41.0)
    _run(b2n, "ZeroshotCLIP", "world_shades", "0", 1, "test_new", 50.0)
    for tree in (cross, dg):
        _run(tree, "CoOp", "world", "4", 1, "train_source", 44.0, at_init=30.0)
        _run(tree, "CoOp", "world", "4", 1, "test_world_sketch", 20.0)
        _run(tree, "GOPro", "world", "4", 1, "train_source", 45.0)
    _run(few, "CoOp", "world_textures", "1", 1, "train_all", 30.0, at_init=25.0)
    _run(few, "CoOp", "world_textures", "4", 1, "train_all", 45.0, at_init=25.0)
    _run(few, "ZeroshotCLIP", "world_textures", "0", 1, "train_all", 25.0)
    for task in demo.TASKS:
        _results(tmp_path, task)

    text = demo.summary(str(tmp_path))
    assert "| Trainer | Base | New | HM | Base at init | datasets |" in text
    assert "| CoOp | 60.00 ± 0.82 (n=3) | 40.00 ± 0.82 (n=3) | 48.00 ± 0.85 (n=3) | 41.00 ± 0.00 (n=3) | 1 |" in text
    # Zero-shot learns nothing: its accuracy at initialisation is its result; one seed, no spread.
    assert "| ZeroshotCLIP | 41.00 (n=1) | 50.00 (n=1) | 45.05 (n=1) | 41.00 (n=1) | 1 |" in text
    assert "| Trainer | world (source) | source at init | world_sketch | target avg |" in text
    assert text.count("| CoOp | 44.00 (n=1) | 30.00 (n=1) | 20.00 (n=1) | 20.00 (n=1) |") == 2  # both tasks
    assert "| GOPro | 45.00 (n=1) | — | — | — |" in text  # no target run, no at-init line
    assert "| Trainer | zero-shot | 1 shot | 4 shots | at init |" in text  # numeric order, zero-shot first
    assert "| CoOp | — | 30.00 (n=1) | 45.00 (n=1) | 25.00 |" in text
    assert "| ZeroshotCLIP | 25.00 (n=1) | — | — | 25.00 |" in text
    assert "± 0.00 (n=1)" not in text
    assert [line for line in text.splitlines() if line.startswith("### ")] == [
        f"### {task}: all trainers (average over datasets, mean ± std over seeds (n))" for task in demo.TASKS]


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
    assert env("base2new")["OPTS"] == "OPTIM.MAX_EPOCH 1"  # the user's --opts
    assert env("base2new")["BACKBONE"] == str(REPO / "assets" / "world_clip_vit.pt")  # the world configs' own
