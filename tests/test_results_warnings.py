"""tools/results.py carries the engine's warn-and-go-on lines (``WARNING:`` in a run's log.txt) into the tables:
each distinct warning once per seed under the comparison table, naming the runs that logged it, and a ``†`` on
every figure that includes that seed (an evaluation also by the warnings of the training run it evaluates)."""
from __future__ import annotations

import json
from pathlib import Path

from tests.test_results import write_log
from tests.test_results_compare import base2new_run, rows_of
from tests.test_scripts_every_trainer import warm_python  # noqa: F401  (the fixture scripts needs)
from tests.test_sweeps import printed_results, scripts  # noqa: F401  (scripts: the fixture)
from tools import results

N_CTX = "WARNING: N_CTX is 8 but CTX_INIT 'a photo of a' has 4 tokens: 4 context vectors are learned"
PRECISION = 'WARNING: evaluating "model" in another precision than it was trained in (fp32)'


def add_warning(run_dir: Path, line: str) -> None:
    """The line where the engine logs it: after the config, before training."""
    log = run_dir / "log.txt"
    head, tail = log.read_text().split("\n", 1)
    log.write_text(f"{head}\n{line}\n{tail}")


def seed_folder(tree: Path, trainer: str, config: str, dataset: str, seed: int, shots: str = "16") -> Path:
    return tree / trainer / config / dataset / f"shots_{shots}" / f"seed{seed}"


def warned_tree(tmp_path: Path) -> Path:
    """CoOp "warned": eurosat seed 1 trained with the N_CTX warning (said again when its model is evaluated, and
    the evaluation in another precision), dtd seed 2 evaluated in another precision; every other seed clean.
    CoOp "clean": the same figures, no warning."""
    tree = tmp_path / "output" / "base2new"
    for config in ("warned", "clean"):
        for seed in (1, 2):
            base2new_run(tree, "CoOp", config, "eurosat", seed, 80.0 + seed, 60.0 + seed)
            base2new_run(tree, "CoOp", config, "dtd", seed, 50.0 + seed, 40.0 + seed)
    eurosat = seed_folder(tree, "CoOp", "warned", "eurosat", 1)
    add_warning(eurosat / "train_base", N_CTX)
    add_warning(eurosat / "train_base", N_CTX)  # said twice in one log: noted once
    add_warning(eurosat / "test_new", N_CTX)
    add_warning(eurosat / "test_new", PRECISION)
    add_warning(seed_folder(tree, "CoOp", "warned", "dtd", 2) / "test_new", PRECISION)
    return tree


def test_a_warned_seed_is_noted_under_the_table_and_its_figures_marked(tmp_path: Path, capsys) -> None:
    tree = warned_tree(tmp_path)
    assert results.main([str(tree)]) == 0
    printed = capsys.readouterr().out
    rows = rows_of(printed)
    assert rows[0] == ["Trainer", "Config", "Shots", "Metric", "dtd", "eurosat", "Average (2 datasets)"]
    clean = next(i for i, row in enumerate(rows) if row[1] == "clean")
    warned = next(i for i, row in enumerate(rows) if row[1] == "warned")
    # A clean configuration carries no mark, whatever its neighbour logged.
    assert not any("†" in cell for row in rows[clean:clean + 3] for cell in row), rows[clean:clean + 3]
    base, new, hm = rows[warned:warned + 3]
    # eurosat: its training warned, so base, new (that model evaluated) and HM are marked.
    assert base[5] == "81.50 ± 0.50 (n=2) †" and new[5] == "61.50 ± 0.50 (n=2) †" and hm[5].endswith(" †")
    # dtd: only seed 2's evaluation warned, so its base figure is clean and new and HM are marked.
    assert base[4] == "51.50 ± 0.50 (n=2)" and new[4].endswith("(n=2) †") and hm[4].endswith("(n=2) †")
    assert all(row[6].endswith(" †") for row in (base, new, hm))  # each average includes a warned seed

    notes = printed.split("† Warnings logged by the runs", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    assert notes == [
        f"- CoOp / warned, 16 shots: dtd, seed 2 (test_new): {PRECISION[len('WARNING: '):]}",
        f"- CoOp / warned, 16 shots: eurosat, seed 1 (train_base, test_new): {N_CTX[len('WARNING: '):]}",
        f"- CoOp / warned, 16 shots: eurosat, seed 1 (test_new): {PRECISION[len('WARNING: '):]}",
    ]

    saved = json.loads((tree / "results.json").read_text())
    by_config = {t["config"]: t for t in saved["tables"]}
    assert by_config["clean"]["warnings"] == []
    assert all(row[m]["warned"] == [] for row in by_config["clean"]["rows"] for m in ("base", "new"))
    assert [(w["dataset"], w["seed"], w["runs"]) for w in by_config["warned"]["warnings"]] == [
        ("dtd", 2, ["test_new"]), ("eurosat", 1, ["train_base", "test_new"]), ("eurosat", 1, ["test_new"])]
    eurosat = next(r for r in by_config["warned"]["rows"] if r["dataset"] == "eurosat")
    assert eurosat["base"]["warned"] == [1] and eurosat["new"]["warned"] == [1] and eurosat["hm_warned"] == [1]


def test_a_tree_without_warnings_has_no_mark_and_no_note(tmp_path: Path, capsys) -> None:
    tree = tmp_path / "output" / "base2new"
    base2new_run(tree, "CoOp", "vit_b16", "eurosat", 1, 80.0, 60.0)
    log = seed_folder(tree, "CoOp", "vit_b16", "eurosat", 1) / "train_base" / "log.txt"
    log.write_text(log.read_text() + "a line that mentions a WARNING: elsewhere is not one\n")
    assert results.main([str(tree), "--detail"]) == 0
    printed = capsys.readouterr().out
    assert "†" not in printed and "Warnings logged" not in printed


def test_transfer_and_few_shot_figures_are_marked_by_their_training_run(tmp_path: Path, capsys) -> None:
    transfer = tmp_path / "output" / "cross-dataset"
    for seed in (1, 2):
        folder = seed_folder(transfer, "CoOp", "vit_b16", "imagenet", seed)
        write_log(folder / "train_source", 70.0)
        for target in ("dtd", "eurosat"):
            write_log(folder / f"test_{target}", 40.0 + seed)
    add_warning(seed_folder(transfer, "CoOp", "vit_b16", "imagenet", 2) / "train_source", N_CTX)
    assert results.main([str(transfer)]) == 0
    rows = rows_of(capsys.readouterr().out)
    assert rows[0][3:] == ["imagenet (source)", "dtd", "eurosat", "Target average (2 targets)"]
    assert all(cell.endswith(" †") for cell in rows[1][3:]), rows[1]  # the targets evaluate the warned model

    few_shot = tmp_path / "output" / "few-shot"
    for shots in ("1", "2"):
        for seed in (1, 2):
            write_log(seed_folder(few_shot, "CoOp", "vit_b16", "eurosat", seed, shots) / "train_all", 50.0)
    add_warning(seed_folder(few_shot, "CoOp", "vit_b16", "eurosat", 1, "2") / "train_all", N_CTX)
    assert results.main([str(few_shot)]) == 0
    printed = capsys.readouterr().out
    row = next(r for r in rows_of(printed) if r[2] == "eurosat")
    assert row[3:] == ["50.00 ± 0.00 (n=2)", "50.00 ± 0.00 (n=2) †"]  # 1 shot clean, 2 shots warned
    assert f"- CoOp / vit_b16: eurosat, 2 shots, seed 1 (train_all): {N_CTX[len('WARNING: '):]}" in printed


def test_a_real_coop_run_with_n_ctx_other_than_ctx_init_has_the_warning_in_the_notes(
    scripts, tmp_path: Path,  # noqa: F811  (the fixture)
) -> None:
    """train.sh and test.sh with the tiny CLIP on the fake eurosat: N_CTX 8 with a four-word CTX_INIT learns 4
    context vectors, as upstream; the warning the engine logs reaches the results table."""
    opts = "TRAINER.COOP.N_CTX 8 TRAINER.COOP.CTX_INIT a_photo_of_a"
    for script in ("train.sh", "test.sh"):
        scripts(script, "eurosat", "base2new", OPTS=opts)
    tree = tmp_path / "output" / "base2new"
    printed = printed_results(str(tree))
    rows = rows_of(printed)
    assert rows[1][3] == "Base" and rows[1][4].endswith("(n=1) †") and rows[2][4].endswith("(n=1) †"), rows
    notes = [line for line in printed.splitlines() if line.startswith("- CoOp / ")]
    assert len(notes) == 1, printed
    assert ("eurosat, seed 1 (train_base, test_new): N_CTX is 8 but CTX_INIT 'a photo of a' has 4 tokens: "
            "4 context vectors are learned") in notes[0]
