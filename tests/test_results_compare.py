"""tools/results.py across methods: the comparison table (a row per trainer/configuration), accuracy at
initialisation, published figures compared like with like, and what the figure draws."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.test_results import write_log
from tools import results
from tools.results_figures import PUBLISHED_HATCH, draw_figure

REPO = Path(__file__).resolve().parents[1]
REFERENCE = str(REPO / "tools" / "reference_results.json")


def add_at_init(run_dir: Path, accuracy: float) -> None:
    """The line the engine prints (TEST.AT_START) before the first step, at the top of the log."""
    log = run_dir / "log.txt"
    log.write_text(f"Evaluate on the *test* set\n* accuracy at initialisation: {accuracy}%\n{log.read_text()}")


def base2new_run(tree: Path, trainer: str, config: str, dataset: str, seed: int, base: float, new: float,
                 shots: str = "16", at_init: float | None = None) -> None:
    folder = tree / trainer / config / dataset / f"shots_{shots}" / f"seed{seed}"
    write_log(folder / "train_base", base)
    write_log(folder / "test_new", new)
    if at_init is not None:
        add_at_init(folder / "train_base", at_init)


@pytest.fixture()
def sweep_tree(tmp_path: Path) -> Path:
    """Two learning rates of CoOp (3 seeds each), zero-shot CLIP (one seed), on eurosat and dtd."""
    tree = tmp_path / "output" / "base2new"
    for seed in (1, 2, 3):
        for dataset, offset in (("eurosat", 0.0), ("dtd", -20.0)):
            base2new_run(tree, "CoOp", "vit_b16", dataset, seed, 80.0 + offset + seed, 60.0 + offset + seed)
            base2new_run(tree, "CoOp", "vit_b16+lr0.01", dataset, seed, 90.0 + offset + seed, 50.0 + offset)
    for dataset, offset in (("eurosat", 0.0), ("dtd", -20.0)):
        base2new_run(tree, "ZeroshotCLIP", "vit_b16", dataset, 1, 55.0 + offset, 65.0 + offset, shots="0")
    return tree


def rows_of(printed: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in printed.splitlines()
            if line.startswith("| ")]


def test_one_comparison_table_with_a_row_per_configuration(sweep_tree: Path, capsys) -> None:
    assert results.main([str(sweep_tree)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("### ") == 1  # one table for the protocol
    rows = rows_of(printed)
    assert rows[0] == ["Trainer", "Config", "Shots", "Metric", "dtd", "eurosat", "Average (2 datasets)"]
    assert rows[1][:4] == ["CoOp", "vit_b16", "16", "Base"]
    # Each configuration's seeds are averaged on their own: 81, 82, 83 -> 82 ± 0.82, never mixed with lr 0.01.
    assert rows[1][5] == "82.00 ± 0.82 (n=3)"
    lr = next(i for i, row in enumerate(rows) if row[1] == "vit_b16+lr0.01")
    # New is 50 for every seed: a measured zero spread over three seeds is printed as such.
    assert rows[lr][5] == "92.00 ± 0.82 (n=3)" and rows[lr + 1][5] == "50.00 ± 0.00 (n=3)"
    zero_shot = next(i for i, row in enumerate(rows) if row[0] == "ZeroshotCLIP")
    assert rows[zero_shot][:4] == ["ZeroshotCLIP", "vit_b16", "0", "Base"]
    assert rows[zero_shot][4:] == ["35.00 (n=1)", "55.00 (n=1)", "45.00 (n=1)"]  # one seed: no spread
    assert "± 0.00 (n=1)" not in printed and [row[3] for row in rows[1:4]] == ["Base", "New", "HM"]


def test_at_init_rows_appear_when_a_log_has_them_and_zero_shot_is_its_own(tmp_path: Path, capsys) -> None:
    tree = tmp_path / "output" / "base2new"
    for seed, start in ((1, 40.0), (2, 42.0)):
        base2new_run(tree, "CoOp", "world", "world_shades", seed, 70.0, 50.0, at_init=start)
    base2new_run(tree, "ZeroshotCLIP", "world", "world_shades", 1, 41.0, 60.0, shots="0")
    base2new_run(tree, "MaPLe", "world", "world_shades", 1, 30.0, 20.0)  # its log has no such line
    assert results.main([str(tree), "--detail"]) == 0
    printed = capsys.readouterr().out
    at_init = [row for row in rows_of(printed) if row[3:4] == ["Base at init"]]
    assert [row[4] for row in at_init] == ["41.00 ± 1.00 (n=2)", "—", "41.00 (n=1)"]  # CoOp, MaPLe, zero-shot
    assert "| Dataset | Base | New | HM | Seeds (base, new) | Base at init |" in printed
    table = next(t for t in results.build_tables(tree, results.collect_runs(tree)) if t.trainer == "CoOp")
    assert table.average["at_init"] == pytest.approx(41.0) and table.logs_at_init

    plain = tmp_path / "plain" / "base2new"
    base2new_run(plain, "CoOp", "world", "world_shades", 1, 70.0, 50.0)
    base2new_run(plain, "ZeroshotCLIP", "world", "world_shades", 1, 41.0, 60.0, shots="0")
    assert results.main([str(plain)]) == 0
    assert "at init" not in capsys.readouterr().out  # no log has the line: no row


def test_at_init_of_transfer_and_few_shot(tmp_path: Path, capsys) -> None:
    transfer = tmp_path / "output" / "cross-dataset"
    folder = transfer / "CoOp" / "world" / "world" / "shots_4" / "seed1"
    write_log(folder / "train_source", 60.0)
    add_at_init(folder / "train_source", 33.0)
    write_log(folder / "test_world_textures", 40.0)
    assert results.main([str(transfer)]) == 0
    rows = rows_of(capsys.readouterr().out)
    assert rows[0][3:5] == ["world (source)", "Source at init"] and rows[1][3:5] == ["60.00 (n=1)", "33.00 (n=1)"]

    few_shot = tmp_path / "output" / "few-shot"
    for shots, start in (("1", 30.0), ("4", 32.0)):
        run = few_shot / "CoOp" / "world" / "world_textures" / f"shots_{shots}" / "seed1" / "train_all"
        write_log(run, 50.0)
        add_at_init(run, start)
    assert results.main([str(few_shot)]) == 0
    rows = rows_of(capsys.readouterr().out)
    assert rows[0] == ["Trainer", "Config", "Dataset", "Metric", "1 shot", "4 shots"]
    assert rows[2] == ["", "", "", "at init", "30.00 (n=1)", "32.00 (n=1)"]


# ---------------------------------------------------------------------------- like with like


def test_reference_on_one_dataset_shows_that_datasets_figure_without_an_average(tmp_path: Path, capsys) -> None:
    tree = tmp_path / "output" / "base2new"
    base2new_run(tree, "CoOp", "vit_b16", "eurosat", 1, 90.0, 50.0)
    assert results.main([str(tree), "--reference", REFERENCE]) == 0
    printed = capsys.readouterr().out
    rows = rows_of(printed)
    assert rows[0] == ["Trainer", "Config", "Shots", "Metric", "eurosat"]  # no average beside one dataset
    published = next(i for i, row in enumerate(rows) if row[0] == "CoOp (published)")
    assert [rows[published + k][4] for k in range(3)] == ["92.19", "54.74", "68.69"]  # CoOp's eurosat row
    assert "No published base2new figures" not in printed and "11" not in printed.split("###")[1].split("Note")[0]
    tables = results.build_tables(tree, results.collect_runs(tree))
    panels, _ = results.figure_panels(tables, results.load_reference(REFERENCE), None)
    assert [p.title for p in panels] == ["base2new: eurosat"]  # no average panel repeating the one dataset


def test_reference_says_why_it_cannot_compare(tmp_path: Path, capsys) -> None:
    tree = tmp_path / "output" / "base2new"
    base2new_run(tree, "CoOp", "world", "world_shades", 1, 70.0, 50.0)
    base2new_run(tree, "VPT", "world", "world_shades", 1, 70.0, 50.0)
    assert results.main([str(tree), "--reference", REFERENCE]) == 0
    printed = capsys.readouterr().out
    assert "Note: CoOp (published): no figure for world_shades in the reference file" in printed
    assert "Note: No published base2new figures for VPT in the reference file." in printed

    dg = tmp_path / "output" / "domain-generalization"
    folder = dg / "CoOp" / "world" / "world" / "shots_4" / "seed1"
    write_log(folder / "train_source", 60.0)
    write_log(folder / "test_world_sketch", 40.0)
    assert results.main([str(dg), "--reference", REFERENCE]) == 0
    printed = capsys.readouterr().out
    assert "CoOp (published) learned on imagenet, not world: its figures are not comparable" in printed
    assert "| CoOp (published)" not in printed


def test_published_averages_are_over_the_datasets_that_ran(sweep_tree: Path, capsys) -> None:
    assert results.main([str(sweep_tree), "--reference", REFERENCE]) == 0
    printed = capsys.readouterr().out
    rows = rows_of(printed)
    published = next(i for i, row in enumerate(rows) if row[0] == "CoOp (published)")
    # CoOp's published dtd (79.44 / 41.18) and eurosat (92.19 / 54.74): averaged over these two, not eleven.
    base, new = (79.44 + 92.19) / 2, (41.18 + 54.74) / 2
    assert rows[published][6] == f"{base:.2f}" and rows[published + 1][6] == f"{new:.2f}"
    assert rows[published + 2][6] == f"{results.harmonic_mean(base, new):.2f}"
    assert "Published averages are over the same 2 datasets (dtd, eurosat)" in printed


# ---------------------------------------------------------------------------- the figure


def bar_heights_and_errors(axis) -> list[tuple[list[float], list[float] | None]]:
    """Per bar container of ``axis``: the bar heights and the half-lengths of its error bars (None: none)."""
    drawn = []
    for container in axis.containers:
        if not hasattr(container, "patches"):
            continue
        heights = [patch.get_height() for patch in container.patches]
        errors = None
        if container.errorbar is not None:
            segments = container.errorbar.lines[2][0].get_segments()
            errors = [abs(seg[1][1] - seg[0][1]) / 2 if len(seg) else math.nan for seg in segments]  # NaN: none
        drawn.append((heights, errors))
    return drawn


def test_base2new_figure_has_error_bars_one_legend_and_no_shots_on_zero_shot(sweep_tree: Path) -> None:
    tables = results.build_tables(sweep_tree, results.collect_runs(sweep_tree))
    panels, columns = results.figure_panels(tables, results.load_reference(REFERENCE), None)
    assert [p.title for p in panels] == ["base2new: dtd", "base2new: eurosat", "base2new: average over 2 datasets"]
    assert panels[0].x_labels[:3] == ["CoOp / vit_b16", "CoOp / vit_b16+lr0.01", "ZeroshotCLIP / vit_b16"]
    assert [s.label for s in panels[0].series] == ["Base", "New", "HM"]
    figure = draw_figure(panels, columns)
    try:
        assert len(figure.legends) == 1 and all(axis.get_legend() is None for axis in figure.axes)
        legend = [text.get_text() for text in figure.legends[0].get_texts()]
        assert legend[:3] == ["Base", "New", "HM"] and "published" in legend[3]
        eurosat = figure.axes[1]
        assert eurosat.get_xlabel() == "method" and eurosat.get_ylabel() == "top-1 accuracy (%)"
        (base_heights, base_errors), *_ = bar_heights_and_errors(eurosat)
        # CoOp vit_b16: 81, 82, 83 -> 82 ± 0.816; lr 0.01: 92 ± 0.816; zero-shot and published: no error bar.
        assert base_heights[:3] == pytest.approx([82.0, 92.0, 55.0])
        assert base_errors[:2] == pytest.approx([math.sqrt(2 / 3)] * 2) and all(math.isnan(e) for e in base_errors[2:])
        bars = next(c for c in eurosat.containers if hasattr(c, "patches"))
        hatched = [patch.get_hatch() for patch in bars.patches]
        assert hatched[:3] == [None] * 3 and set(hatched[3:]) == {PUBLISHED_HATCH}
    finally:
        import matplotlib.pyplot as plt

        plt.close(figure)


def test_transfer_figure_has_no_average_bar_for_one_target_and_writes_a_pdf(tmp_path: Path) -> None:
    tree = tmp_path / "output" / "cross-dataset"
    for seed, offset in ((1, 0.0), (2, 2.0)):
        folder = tree / "CoOp" / "world" / "world" / "shots_4" / f"seed{seed}"
        write_log(folder / "train_source", 60.0 + offset)
        write_log(folder / "test_world_textures", 40.0 + offset)
    zero_shot = tree / "ZeroshotCLIP" / "world" / "world" / "shots_0" / "seed1"
    write_log(zero_shot / "train_source", 50.0)
    write_log(zero_shot / "test_world_textures", 45.0)
    tables = results.build_tables(tree, results.collect_runs(tree))
    (panel,), _ = results.figure_panels(tables, {}, None)
    assert panel.x_labels == ["world (source)", "world_textures"] and panel.x_title == "dataset"
    assert [s.label for s in panel.series] == ["CoOp / world", "ZeroshotCLIP / world"]
    assert panel.series[0].errors == [1.0, 1.0] and panel.series[1].errors == [None, None]
    written = results.plot_tables(tables, {}, None, tmp_path / "figure.png")
    assert [p.name for p in written] == ["figure.png", "figure.pdf"]
    assert written[1].read_bytes()[:5] == b"%PDF-"
