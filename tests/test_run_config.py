"""tools/run_config.py: the exact config comparison, the request record that lets a rerun skip a finished run
without importing torch, and the once-per-call facts (folder name, EVAL_ONLY from the registry, source key)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tools import run_config

REPO = Path(__file__).resolve().parents[1]


def tiny_coop_args(*overrides: str, root: str = "/data") -> list[str]:
    return ["--root", root, "--seed", "1", "--trainer", "CoOp",
            "--dataset-config-file", str(REPO / "configs/datasets/caltech101.yaml"),
            "--config-file", str(REPO / "configs/trainers/CoOp/tiny.yaml"), "DATASET.NUM_SHOTS", "2", *overrides]


def test_run_config_compares_the_keys_that_shape_the_result(tmp_path: Path) -> None:
    saved = run_config.requested_config(tiny_coop_args("OPTIM.LR", "0.01"))
    (tmp_path / "config.yaml").write_text(saved.dump())
    assert run_config.check(str(tmp_path), tiny_coop_args("OPTIM.LR", "0.01")) == []
    # Where files go and how many workers load them change nothing.
    assert run_config.check(str(tmp_path), tiny_coop_args("OPTIM.LR", "0.01", "DATALOADER.NUM_WORKERS", "0",
                                                          root="/elsewhere")) == []
    assert run_config.check(str(tmp_path), tiny_coop_args("OPTIM.LR", "0.05")) == [
        "config differs: OPTIM.LR: 0.01 -> 0.05"]
    # The test split changes the reported figure, not the model.
    val = tiny_coop_args("OPTIM.LR", "0.01", "TEST.SPLIT", "val")
    assert run_config.check(str(tmp_path), val) == ["config differs: TEST.SPLIT: 'test' -> 'val'"]
    assert run_config.check(str(tmp_path), val, as_model=True) == [
        f"unfinished: {tmp_path} holds no checkpoint (no <model>/checkpoint file)"]
    # A key the saved config predates is taken at its default.
    older = saved.clone()
    older.OPTIM.pop("WARMUP_EPOCH")
    (tmp_path / "config.yaml").write_text(older.dump())
    assert run_config.check(str(tmp_path), tiny_coop_args("OPTIM.LR", "0.01")) == []
    assert run_config.main(["check", str(tmp_path / "absent"), *tiny_coop_args()]) == 2


def write_unfinished_run(run_dir: Path, args: list[str]) -> Path:
    """A run folder of ``args``'s config (2 epochs) whose prompt learner stopped after epoch 1; its model folder."""
    (run_dir / "config.yaml").write_text(run_config.requested_config(args).dump())
    model = run_dir / "prompt_learner"
    model.mkdir()
    (model / "model.pth.tar-1").write_bytes(b"")
    (model / "checkpoint").write_text("model.pth.tar-1\n")
    return model


def test_run_config_model_must_reach_its_last_epoch(tmp_path: Path) -> None:
    args = tiny_coop_args("OPTIM.MAX_EPOCH", "2")
    model = write_unfinished_run(tmp_path, args)
    assert run_config.check(str(tmp_path), args, as_model=True) == [
        f"unfinished: {tmp_path} stopped at epoch 1 of 2 ({model} has no model.pth.tar-2)"]
    (model / "model.pth.tar-2").write_bytes(b"")
    (model / "checkpoint").write_text("model.pth.tar-2\n")
    assert run_config.check(str(tmp_path), args, as_model=True) == []


# ---------------------------------------------------------------------------- the request record


def run_without_torch(*argv: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """``tools/run_config.py ARGV`` in a process where ``import torch`` fails."""
    code = ("import runpy, sys; sys.modules['torch'] = None; sys.argv = sys.argv[1:]; "
            "runpy.run_path(sys.argv[0], run_name='__main__')")
    return subprocess.run([sys.executable, "-c", code, str(REPO / "tools" / "run_config.py"), *argv], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_a_recorded_run_is_recognised_without_torch_and_a_changed_one_is_not(tmp_path: Path) -> None:
    args = tiny_coop_args("OPTIM.LR", "0.01")
    (tmp_path / "config.yaml").write_text(run_config.requested_config(args).dump())
    assert not (tmp_path / run_config.REQUEST_RECORD).exists()
    # The full comparison passes and records the request, with the source key it was given.
    assert run_config.check(str(tmp_path), args, source="key-1") == []
    recorded = json.loads((tmp_path / run_config.REQUEST_RECORD).read_text())
    assert recorded["source"] == "key-1" and recorded["args"] == args

    fast = run_without_torch("check", "--source", "key-1", str(tmp_path), *args)
    assert fast.returncode == 0, fast.stderr
    # Anything else needs the full comparison, which imports torch: blocked here, it fails loudly.
    for other in (["--source", "key-2", str(tmp_path), *args],
                  ["--source", "key-1", str(tmp_path), *tiny_coop_args("OPTIM.LR", "0.05")]):
        slow = run_without_torch("check", *other)
        assert slow.returncode != 0 and "torch" in slow.stderr
    # ... and with torch a changed config is refused, and the record is left as it was.
    assert run_config.check(str(tmp_path), tiny_coop_args("OPTIM.LR", "0.05"), source="key-1") == [
        "config differs: OPTIM.LR: 0.01 -> 0.05"]
    assert json.loads((tmp_path / run_config.REQUEST_RECORD).read_text()) == recorded

    # A config.yaml rewritten after the record no longer matches it.
    (tmp_path / "config.yaml").write_text(run_config.requested_config(tiny_coop_args("OPTIM.LR", "0.05")).dump())
    assert not run_config.recorded_request_matches(str(tmp_path), "key-1", args)
    assert run_config.check(str(tmp_path), args, source="key-1") == ["config differs: OPTIM.LR: 0.05 -> 0.01"]


def test_record_then_model_check_without_torch(tmp_path: Path) -> None:
    """record (after a fresh run) makes test.sh's --model check of that run torch-free; unfinished still counts."""
    args = tiny_coop_args("OPTIM.MAX_EPOCH", "2")
    model = write_unfinished_run(tmp_path, args)
    assert run_without_torch("record", "--source", "k", str(tmp_path), *args).returncode == 0
    unfinished = run_without_torch("check", "--model", "--source", "k", str(tmp_path), *args)
    assert unfinished.returncode == 1 and "unfinished:" in unfinished.stderr and "stopped at epoch 1 of 2" in unfinished.stderr
    (model / "model.pth.tar-2").write_bytes(b"")
    (model / "checkpoint").write_text("model.pth.tar-2\n")
    assert run_without_torch("check", "--model", "--source", "k", str(tmp_path), *args).returncode == 0


# ---------------------------------------------------------------------------- describe


def test_source_key_follows_the_code_the_folder_and_the_backbone_file(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for name in ("dassl/config/defaults.py", "trainers/coop.py", "configs/trainers/CoOp/tiny.yaml", "train.py"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text("x = 1\n")
    code = run_config.code_fingerprint(str(repo))
    assert run_config.code_fingerprint(str(repo)) == code
    (repo / "trainers/coop.py").write_text("x = 2\n")
    assert run_config.code_fingerprint(str(repo)) != code
    code = run_config.code_fingerprint(str(repo))
    (repo / "configs/trainers/CoOp/tiny.yaml").write_text("OPTIM: {LR: 0.1}\n")
    assert run_config.code_fingerprint(str(repo)) != code

    clip = tmp_path / "clip.pt"
    clip.write_bytes(b"weights")
    config = REPO / "configs/trainers/CoOp/tiny.yaml"
    signature = run_config.backbone_signature(str(config), str(clip), [])
    assert signature.startswith(f"{clip}:7:")
    clip.write_bytes(b"other weights")  # replaced at the same path
    assert run_config.backbone_signature(str(config), str(clip), []) != signature
    assert run_config.backbone_signature(str(config), str(clip), [("MODEL.BACKBONE.NAME", "RN50")]) == "RN50"
    assert run_config.source_key("c", "/here", "b") != run_config.source_key("c", "/there", "b")


def test_describe_reads_eval_only_from_the_registry_once_per_code(tmp_path: Path) -> None:
    cache = tmp_path / "registry.json"
    config = str(REPO / "configs/trainers/ZeroshotCLIP/tiny.yaml")
    facts = run_config.describe("ZeroshotCLIP", config, "tiny", cache=str(cache))
    assert facts["EVAL_ONLY"] == "1" and facts["CONFIG_NAME"] == "tiny" and len(facts["SOURCE_KEY"]) == 32
    cached = json.loads(cache.read_text())
    assert cached["code"] == run_config.code_fingerprint()
    assert cached["eval_only"]["ZeroshotCLIP"] is True and cached["eval_only"]["CoOp"] is False
    coop = run_config.describe("CoOp", str(REPO / "configs/trainers/CoOp/tiny.yaml"), "tiny", backbone="RN50",
                               settings=[("OPTIM.LR", "0.01")], cache=str(cache))
    assert coop["EVAL_ONLY"] == "0" and coop["CONFIG_NAME"] == "tiny+backbone-RN50+lr0.01"
    # A cache written for other code is not believed: the registry says what the class says.
    cache.write_text(json.dumps({"code": "old", "eval_only": {"CoOp": True}}))
    assert run_config.describe("CoOp", str(REPO / "configs/trainers/CoOp/tiny.yaml"), "tiny",
                               cache=str(cache))["EVAL_ONLY"] == "0"
    try:
        run_config.describe("NoSuchTrainer", config, "tiny", cache=str(cache))
    except run_config.UnknownTrainer as error:
        assert "TRAINER 'NoSuchTrainer' is not a registered trainer; registered: CoCoOp, CoOp" in str(error)
    else:
        raise AssertionError("an unknown trainer was described")


def test_describe_with_a_fresh_cache_does_not_import_torch(tmp_path: Path) -> None:
    config = str(REPO / "configs/trainers/CoOp/tiny.yaml")
    run_config.eval_only_trainers(run_config.code_fingerprint())  # fills the repository's cache if stale
    described = run_without_torch("describe", "--trainer", "CoOp", "--config-file", config, "--cfg", "tiny",
                                  "--backbone", "", "--tag", "", "TRAINER.COOP.N_CTX", "8", cwd=tmp_path)
    assert described.returncode == 0, described.stderr
    assert described.stdout.splitlines()[:2] == ["CONFIG_NAME=tiny+nctx8", "EVAL_ONLY=0"]
    bad = run_without_torch("describe", "--trainer", "CoOp", "--config-file", config, "--cfg", "tiny",
                            "--backbone", "", "--tag", "a/b", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith("error: TAG 'a/b' cannot name a folder")
    odd = run_without_torch("describe", "--trainer", "CoOp", "--config-file", config, "--cfg", "tiny",
                            "--backbone", "", "--tag", "", "OPTIM.LR", cwd=tmp_path)
    assert odd.returncode == 2 and "odd number of words" in odd.stderr
