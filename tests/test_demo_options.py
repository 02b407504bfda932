"""The demo's --tasks and --prec options: which calls it plans, which keys it sets, where it writes."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import demo  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def test_tasks_are_checked_and_kept_in_protocol_order():
    assert demo.select_tasks(None) == demo.TASKS
    assert demo.select_tasks(" few-shot,base2new ") == ("base2new", "few-shot")
    with pytest.raises(SystemExit, match=r"^demo: --tasks 'base2new,fewshot': fewshot is not a task; valid: "
                                         r"base2new, cross-dataset, domain-generalization, few-shot"):
        demo.select_tasks("base2new,fewshot")
    with pytest.raises(SystemExit, match="^demo: --tasks is empty; valid: base2new, "):
        demo.select_tasks(" , ")


def test_tasks_plan_only_their_calls_and_data():
    def calls(tasks):
        return [[(s.script, s.task) for s in chain] for chain in demo.plan(("CoOp",), demo.DEMO, tasks)]

    assert calls(("domain-generalization",)) == [[("train", "domain-generalization"),
                                                   ("test", "domain-generalization")]]
    assert calls(("cross-dataset",)) == [[("train", "cross-dataset"), ("test", "cross-dataset")]]
    planned = {task for chain in calls(("base2new", "few-shot")) for _, task in chain}
    assert planned == {"base2new", "few-shot"}
    assert demo.datasets_of(demo.DEMO, ("few-shot",)) == demo.DEMO.few_shot
    assert set(demo.datasets_of(demo.DEMO, ("domain-generalization",))) == {demo.SOURCE, *demo.DEMO.dg_targets}


def test_prec_is_checked_and_gives_each_precision_its_own_output():
    with pytest.raises(SystemExit, match=r"^demo: --prec 'fp16' is not valid; valid: fp32, bf16, auto$"):
        demo.parse_args(["--prec", "fp16"])
    assert demo.parse_args([]).output == str(REPO / "demo_output" / "demo")
    assert demo.parse_args(["--full"]).output == str(REPO / "demo_output" / "full")
    assert demo.parse_args(["--prec", "bf16"]).output == str(REPO / "demo_output" / "demo_bf16")
    assert demo.parse_args(["--full", "--prec", "auto"]).output == str(REPO / "demo_output" / "full_auto")
    assert demo.parse_args(["--prec", "bf16", "--output", "x"]).output == "x"
    assert "precision bf16" in demo.heading_of(demo.DEMO, "bf16")
    assert "precision auto (runs as " in demo.heading_of(demo.DEMO, "auto")


def test_prec_sets_the_key_the_engine_reads_for_every_trainer(tmp_path):
    """Each key, given as a KEY VALUE pair to train.py, is the PREC the engine resolves for that trainer."""
    from dassl.engine import TRAINER_REGISTRY
    from dassl.engine.precision import requested_precision
    from train import parse_args, setup_cfg

    trainers = demo.available_trainers("world")
    keys = demo.precision_keys(trainers)
    assert set(keys) == set(trainers)
    for trainer in trainers:
        argv = ["--trainer", trainer, "--config-file", str(REPO / "configs" / "trainers" / trainer / "world.yaml"),
                keys[trainer], "bf16"]
        cfg = setup_cfg(parse_args(argv))
        engine_node = TRAINER_REGISTRY.get(trainer).CFG_NODE or trainer.upper()  # SimpleTrainer's rule
        assert requested_precision(cfg, engine_node) == ("bf16", keys[trainer]), trainer

    args = demo.parse_args(["--output", str(tmp_path), "--prec", "bf16", "--opts", "TRAINER.COOP.PREC fp32"])
    env = demo.script_env(args, demo.Step("train", "CoOp", "base2new", "world"), demo.DEMO,
                          precision_key=keys["CoOp"])
    assert env["OPTS"] == "TRAINER.COOP.PREC bf16 TRAINER.COOP.PREC fp32"  # --opts last: it wins


def test_prec_refuses_a_trainer_without_a_prec_key(monkeypatch):
    import dassl.engine

    monkeypatch.setattr(dassl.engine, "trainer_config_node", lambda name: "NO_SUCH_NODE")
    with pytest.raises(SystemExit, match=r"^demo: --prec: CoOp has no TRAINER.NO_SUCH_NODE.PREC key"):
        demo.precision_keys(("CoOp",))


def test_every_call_gets_the_environment_the_fork_server_started_with(monkeypatch, tmp_path):
    """Variables set in the demo process after the snapshot (scikit-learn sets KMP_* on import) never reach a
    call: one would differ from the server's and send every call to a fresh interpreter."""
    from tools.warm_python import import_time_env

    args = demo.parse_args(["--output", str(tmp_path)])
    snapshot = dict(demo.os.environ)
    monkeypatch.setenv("KMP_INIT_AT_FORK", "FALSE")
    env = demo.script_env(args, demo.Step("test", "CoOp", "base2new", "world"), demo.DEMO, environ=snapshot)
    assert import_time_env(env) == import_time_env(demo.process_env(args, snapshot))
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == str(max(1, (demo.os.cpu_count() or 1) // args.jobs))
