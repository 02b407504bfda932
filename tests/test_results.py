"""tools/results.py on synthetic output trees: parsing, seed statistics, HM, files written."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from tools import results

REPO = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_log(run_dir: Path, accuracy: float | None, before_marker: float | None = None) -> None:
    """A log shaped like the engine's: optional accuracy before the marker, then the result."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = ["Loading trainer: CoOp", "epoch [1/1] loss 1.0"]
    if before_marker is not None:
        lines.append(f"* accuracy: {before_marker}%")  # a validation print: must be ignored
    lines.append("Finish training")
    if accuracy is not None:
        lines += ["=> result", "* total: 100", "* correct: 50", f"* accuracy: {accuracy}%",
                  "* error: 50.0%", "* macro_f1: 40.0%"]
    (run_dir / "log.txt").write_text("\n".join(lines) + "\n")


def seed_folder(tree: Path, dataset: str, seed: int, trainer: str = "CoOp", config: str = "tiny") -> Path:
    return tree / trainer / config / dataset / "shots_16" / f"seed{seed}"


@pytest.fixture()
def base2new_tree(tmp_path: Path) -> Path:
    tree = tmp_path / "output" / "base2new"
    accuracies = {  # dataset -> seed -> (base, new)
        "caltech101": {1: (90.0, 80.0), 2: (92.0, 82.0), 3: (94.0, 84.0)},
        "dtd": {1: (70.0, 50.0), 2: (74.0, 54.0)},  # seed 3 never ran
    }
    for dataset, by_seed in accuracies.items():
        for seed, (base, new) in by_seed.items():
            write_log(seed_folder(tree, dataset, seed) / "train_base", base, before_marker=11.0)
            write_log(seed_folder(tree, dataset, seed) / "test_new", new)
    # eurosat: trained but not tested on new yet.
    write_log(seed_folder(tree, "eurosat", 1) / "train_base", 88.0)
    return tree


@pytest.fixture()
def dg_tree(tmp_path: Path) -> Path:
    tree = tmp_path / "output" / "domain-generalization"
    for seed, offset in ((1, 0.0), (2, 2.0)):
        folder = seed_folder(tree, "imagenet", seed, trainer="GOPro", config="vit_b16")
        write_log(folder / "train_source", 70.0 + offset)
        write_log(folder / "test_imagenetv2", 60.0 + offset)
        write_log(folder / "test_imagenet_a", 50.0 + offset)
    # An interrupted target run of seed 1: a log without a result.
    write_log(seed_folder(tree, "imagenet", 1, trainer="GOPro", config="vit_b16") / "test_imagenet_r", None)
    return tree


def test_read_accuracy_uses_last_match_after_marker(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    log.write_text("* accuracy: 10.0%\n=> result\n* accuracy: 55.5%\n=> result\n* accuracy: 6.25e1%\n")
    assert results.read_accuracy(log) == pytest.approx(62.5)
    log.write_text("* accuracy: 10.0%\nFinish training\n")
    assert results.read_accuracy(log) is None


def test_base2new_means_std_and_hm(base2new_tree: Path) -> None:
    tables = results.build_tables(base2new_tree, results.collect_runs(base2new_tree))
    assert len(tables) == 1
    table = tables[0]
    rows = {row.dataset: row for row in table.rows}
    assert list(rows) == ["caltech101", "dtd", "eurosat"]  # papers' order

    caltech = rows["caltech101"]
    assert caltech.base.mean == pytest.approx(92.0)
    assert caltech.base.std == pytest.approx(math.sqrt(8 / 3))  # population std of 90, 92, 94
    assert caltech.new.mean == pytest.approx(82.0)
    assert caltech.hm == pytest.approx(2 * 92 * 82 / (92 + 82))
    per_seed_hm = [2 * b * n / (b + n) for b, n in ((90, 80), (92, 82), (94, 84))]
    assert caltech.hm_std == pytest.approx(results.population_std(per_seed_hm))

    assert rows["dtd"].base.count == 2 and rows["dtd"].base.mean == pytest.approx(72.0)
    assert rows["eurosat"].new.mean is None and rows["eurosat"].hm is None

    # Average over datasets with both: HM of averaged base and averaged new (not mean of HMs).
    average = table.average
    assert average["datasets"] == 2
    assert average["base"] == pytest.approx(82.0) and average["new"] == pytest.approx(67.0)
    assert average["hm"] == pytest.approx(2 * 82 * 67 / (82 + 67))


def test_base2new_command_writes_markdown_json_and_png(base2new_tree: Path, capsys) -> None:
    reference = str(REPO / "tools/reference_results.json")
    assert results.main([str(base2new_tree), "--reference", reference, "--detail"]) == 0
    printed = capsys.readouterr().out
    assert "| caltech101 | 92.00 ± 1.63 | 82.00 ± 1.63 | 86.71 ± 1.64 | 3/3, 3/3 |" in printed
    assert "| eurosat | 88.00 | — | — | 1/1, 0/1 |" in printed  # one seed: no spread
    assert "- eurosat new, seed 1: not run yet" in printed
    # The std of an average is over the per-seed averages of the seeds both datasets have (1, 2).
    assert "**Average** (2 datasets) | 82.00 ± 1.50 | 67.00 ± 1.50 | 73.74 ± 1.52 | 2 common seeds" in printed
    assert "98.00 / 89.81 / 93.73" in printed  # published CoOp caltech101 beside ours

    assert (base2new_tree / "results.md").read_text() in printed
    saved = json.loads((base2new_tree / "results.json").read_text())
    caltech = saved["tables"][0]["rows"][0]
    assert caltech["dataset"] == "caltech101"
    assert caltech["base"]["seeds"] == {"1": 90.0, "2": 92.0, "3": 94.0}
    assert (base2new_tree / "results.png").read_bytes()[:8] == PNG_SIGNATURE
    assert (base2new_tree / "results.pdf").read_bytes()[:5] == b"%PDF-"
    # Without --detail only the comparison is printed.
    assert results.main([str(base2new_tree)]) == 0
    assert "### base2new — " not in capsys.readouterr().out


def test_domain_generalization_table(dg_tree: Path, tmp_path: Path, capsys) -> None:
    plot = tmp_path / "plots" / "dg.png"
    reference = str(REPO / "tools/reference_results.json")
    assert results.main([str(dg_tree), "--reference", reference, "--plot", str(plot), "--detail"]) == 0
    printed = capsys.readouterr().out
    assert "### domain-generalization — GOPro / vit_b16, 16 shots, source imagenet" in printed
    assert "| imagenet | source | 71.00 ± 1.00 | 2/2 | 73.27 |" in printed
    # Targets in the papers' order; the interrupted one shows as missing.
    lines = printed.splitlines()
    order = [next(i for i, line in enumerate(lines) if line.startswith(f"| {name} |"))
             for name in ("imagenetv2", "imagenet_a", "imagenet_r")]
    assert order == sorted(order)
    assert "| imagenet_r | target | — | 0/2 | 78.02 |" in printed
    assert "- imagenet_r (target), seed 1: unfinished: no result in " in printed
    assert "- imagenet_r (target), seed 2: not run yet" in printed
    # The published average is over the two targets averaged here (65.35, 52.23), not the paper's four.
    assert "**Target average** (2 targets) |  | 56.00 ± 1.00 | 2 common seeds | 58.79 |" in printed
    assert plot.read_bytes()[:8] == PNG_SIGNATURE and plot.with_suffix(".pdf").is_file()
    table = json.loads((dg_tree / "results.json").read_text())["tables"][0]
    assert table["protocol"] == "domain-generalization"
    assert table["target_average"] == pytest.approx(56.0)


def test_symlinked_source_run_is_read(dg_tree: Path, tmp_path: Path) -> None:
    """The scripts link a DG source run to the cross-dataset one; the link must count."""
    elsewhere = tmp_path / "shared_source"
    write_log(elsewhere, 80.0)
    link = seed_folder(dg_tree, "imagenet", 3, trainer="GOPro", config="vit_b16") / "train_source"
    link.parent.mkdir(parents=True)
    link.symlink_to(elsewhere)
    tables = results.build_tables(dg_tree, results.collect_runs(dg_tree))
    assert tables[0].rows[0].accuracy.seeds == {1: 70.0, 2: 72.0, 3: 80.0}


def test_empty_tree_is_a_clear_error(tmp_path: Path, capsys) -> None:
    tree = tmp_path / "output" / "base2new"
    write_log(seed_folder(tree, "dtd", 1) / "train_base", None)  # only an unfinished run
    assert results.main([str(tree)]) == 1
    assert "no results under" in capsys.readouterr().err
    assert not (tree / "results.md").exists()
    assert results.main([str(tmp_path / "absent")]) == 1
    assert "is not a folder" in capsys.readouterr().err
    assert results.main([str(tmp_path / "output")]) == 1  # the output root, not a task folder
    assert "holds task folders (base2new); give one of them" in capsys.readouterr().err


def test_reference_file_is_consistent() -> None:
    """Published HMs match 2BN/(B+N) and averages match their rows (to the printed rounding)."""
    reference = json.loads((REPO / "tools/reference_results.json").read_text())
    known_mismatch = {("DePT", "ucf101")}  # published as 82.46; kept, see the file's notes
    for method in ("GOPro", "CLIP", "CoOp", "CoCoOp"):
        assert method in reference["base2new"]
        for protocol in ("cross-dataset", "domain-generalization"):
            assert method in reference[protocol]
    for method, rows in reference["base2new"].items():
        datasets = [d for d in rows if d not in ("source", "average")]
        assert len(datasets) == 11
        for dataset in datasets + ["average"]:
            row = rows[dataset]
            if (method, dataset) not in known_mismatch:
                assert results.harmonic_mean(row["base"], row["new"]) == pytest.approx(row["hm"], abs=0.011)
        for metric in ("base", "new"):
            assert results.mean([rows[d][metric] for d in datasets]) == pytest.approx(
                rows["average"][metric], abs=0.011)
    for protocol, count in (("cross-dataset", 10), ("domain-generalization", 4)):
        for entry in reference[protocol].values():
            targets = [v for d, v in entry["accuracy"].items() if d != entry["source_dataset"]]
            assert len(targets) == count
            assert results.mean(targets) == pytest.approx(entry["target_average"], abs=0.011)


def test_best_val_training_logs_count_only_the_test_result(tmp_path):
    """Per-epoch *val* results of a best_val run are never the run's result, finished or not."""
    killed = tmp_path / "killed.txt"
    killed.write_text("Evaluate on the *val* set\n=> result\n* accuracy: 50.0%\n")
    finished = tmp_path / "finished.txt"
    finished.write_text(killed.read_text() + "Finish training\nEvaluate on the *test* set\n=> result\n* accuracy: 61.0%\n")
    assert results.read_accuracy(killed) is None
    assert results.read_accuracy(finished) == 61.0


# ---------------------------------------------------------------------------- bad logs


@pytest.mark.parametrize("figure", ["..", "1e999", "250", "nan", "-3"])
def test_a_figure_that_is_not_an_accuracy_is_refused(tmp_path: Path, figure: str) -> None:
    log = tmp_path / "log.txt"
    log.write_text(f"=> result\n* accuracy: {figure}%\n")
    with pytest.raises(results.InvalidResult, match=f"{log}: '\\* accuracy: {re.escape(figure)}%'"):
        results.read_accuracy(log)


def test_bad_and_unreadable_logs_are_named_and_left_out(tmp_path: Path, capsys) -> None:
    tree = tmp_path / "output" / "base2new"
    for seed, base in ((1, "60.0"), (2, "1e999"), (3, "..")):
        write_log(seed_folder(tree, "dtd", seed) / "train_base", 50.0)
        (seed_folder(tree, "dtd", seed) / "train_base" / "log.txt").write_text(f"=> result\n* accuracy: {base}%\n")
    (seed_folder(tree, "dtd", 4) / "train_base" / "log.txt").mkdir(parents=True)  # cannot be read as a file
    write_log(seed_folder(tree, "dtd", 5) / "train_base", None)  # unfinished

    assert results.main([str(tree), "--detail"]) == 0
    captured = capsys.readouterr()
    for seed in (2, 3, 4):
        log = seed_folder(tree, "dtd", seed) / "train_base" / "log.txt"
        assert any(line.startswith("warning: ") and str(log) in line for line in captured.err.splitlines())
    assert "unreadable log" in captured.err and "is not a number" in captured.err
    assert "| dtd | 60.00 | — | — | 1/5, 0/5 |" in captured.out
    assert "- dtd base, seed 5: unfinished: no result in" in captured.out

    def refuse(constant: str) -> None:
        raise AssertionError(f"results.json holds {constant}")

    saved = json.loads((tree / "results.json").read_text(), parse_constant=refuse)
    assert saved["tables"][0]["rows"][0]["base"]["seeds"] == {"1": 60.0}


# ---------------------------------------------------------------------------- few-shot


@pytest.fixture()
def few_shot_tree(tmp_path: Path) -> Path:
    tree = tmp_path / "output" / "few-shot"
    for dataset, offset in (("caltech101", 0.0), ("dtd", -20.0)):
        for shots in (1, 2, 4):
            for seed in (1, 2, 3):
                run = tree / "CoOp" / "tiny" / dataset / f"shots_{shots}" / f"seed{seed}" / "train_all"
                write_log(run, 60.0 + offset + 5 * shots + (seed - 2))
        zero_shot = tree / "ZeroshotCLIP" / "tiny" / dataset / "shots_0" / "seed1" / "train_all"
        write_log(zero_shot, 55.0 + offset)
    # An unfinished 8-shot run of one seed.
    write_log(tree / "CoOp" / "tiny" / "dtd" / "shots_8" / "seed1" / "train_all", None)
    return tree


def test_few_shot_table_and_plot(few_shot_tree: Path, capsys) -> None:
    assert results.main([str(few_shot_tree), "--detail"]) == 0
    printed = capsys.readouterr().out
    assert "### few-shot — CoOp / tiny" in printed
    assert "| Dataset | 1 shot | 2 shots | 4 shots | 8 shots |" in printed
    # 65 + (seed - 2): mean 65, population std of (-1, 0, 1) = 0.82
    assert "| caltech101 | 65.00 ± 0.82 (3/3) | 70.00 ± 0.82 (3/3) | 80.00 ± 0.82 (3/3) | — |" in printed
    assert "| dtd | 45.00 ± 0.82 (3/3) | 50.00 ± 0.82 (3/3) | 60.00 ± 0.82 (3/3) | — (0/1) |" in printed
    assert "| **Average** | 55.00 ± 0.82 (2 datasets, 3 common seeds) |" in printed
    assert "- dtd 8 shots, seed 1: unfinished: no result in" in printed
    assert "### few-shot — ZeroshotCLIP / tiny" in printed and "| caltech101 | 55.00 (1/1) |" in printed
    # The comparison: a row per trainer and dataset, zero-shot in its own column.
    assert "| Trainer | Config | Dataset | zero-shot | 1 shot | 2 shots | 4 shots | 8 shots |" in printed
    assert "| CoOp | tiny | caltech101 |  | 65.00 ± 0.82 (n=3) | 70.00 ± 0.82 (n=3) | 80.00 ± 0.82 (n=3) |  |" in printed
    assert "| ZeroshotCLIP | tiny | caltech101 | 55.00 (n=1) |  |  |  |  |" in printed
    assert (few_shot_tree / "results.png").read_bytes()[:8] == PNG_SIGNATURE

    table = json.loads((few_shot_tree / "results.json").read_text())["tables"][0]
    assert table["protocol"] == "few-shot" and table["shots"] == ["1", "2", "4", "8"]
    average = table["average"]["4"]
    assert {k: average[k] for k in ("mean", "std", "datasets", "seeds")} == {
        "mean": 70.0, "std": pytest.approx(math.sqrt(2 / 3)), "datasets": 2, "seeds": 3}
    assert average["at_init"] is None  # no log has an accuracy at initialisation


def test_few_shot_plot_has_a_line_per_trainer_with_a_seed_band(few_shot_tree: Path) -> None:
    tables = results.build_tables(few_shot_tree, results.collect_runs(few_shot_tree))
    panels = results.few_shot_panels(tables)
    assert [p.title for p in panels] == ["few-shot: caltech101", "few-shot: dtd", "few-shot: average over 2 datasets"]
    coop, zero_shot = panels[0].series
    assert coop.label == "CoOp / tiny" and coop.shots == [1, 2, 4]
    assert coop.means == [65.0, 70.0, 80.0] and coop.stds == pytest.approx([math.sqrt(2 / 3)] * 3)
    assert zero_shot.shots == [0] and zero_shot.means == [55.0]
