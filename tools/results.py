"""Tables and a bar chart from the output tree of scripts/train.sh and scripts/test.sh.

    python tools/results.py output/base2new [--reference tools/reference_results.json]
                                            [--reference-methods GOPro,CoOp] [--plot PATH]

The tree is ``<TASK>/<TRAINER>/<CFG>/<DATASET>/shots_<K>/seed<S>/<RUN>/log.txt``, RUN being
``train_base`` and ``test_new`` (base-to-new) or ``train_source`` and ``test_<target>``
(cross-dataset, domain generalisation). A log's accuracy is read as upstream's
``parse_test_res.py --test-log`` reads it: the last ``* accuracy: X%`` line after ``=> result``.

Prints one Markdown table per protocol and trainer/config/shots and writes ``results.md``,
``results.json`` and ``results.png`` into the tree. Base-to-new HM is 2BN/(B+N) of the
seed-averaged accuracies; its "± std" is the population std of the per-seed HMs. The Average
row is the HM of the averaged base and averaged new accuracies over datasets that have both.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

RESULT_MARKER = "=> result"
ACCURACY_PATTERN = re.compile(r"\* accuracy: ([\.\deE+-]+)%")
# The engine names the split before each evaluation; with TEST.FINAL_MODEL best_val a training log also
# holds per-epoch *val* results, which are never the run's result.
EVAL_SPLIT_PATTERN = re.compile(r"Evaluate on the \*(\w+)\* set")
MISSING = "—"

BASE_RUN = "train_base"
NEW_RUN = "test_new"
SOURCE_RUN = "train_source"
TARGET_RUN_PREFIX = "test_"

BASE2NEW = "base2new"
CROSS_DATASET = "cross-dataset"
DOMAIN_GENERALIZATION = "domain-generalization"
TRANSFER = "transfer"  # a source/target tree whose folder name is not one of the two tasks

# Rows follow the order of the papers' tables; other datasets come after, by name.
DATASET_ORDER = [
    "imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
    "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101",
    "imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r",
]

# Trainer names of this repo -> method names used in the reference file.
REFERENCE_NAME_OF_TRAINER = {"ZeroshotCLIP": "CLIP"}


# ---------------------------------------------------------------------------- reading logs


def read_accuracy(log_path: Path) -> float | None:
    """The last test-split accuracy printed after the result marker, or None when the run has none."""
    accuracy = None
    after_marker = False
    split = None  # the split of the latest "Evaluate on the *X* set" line; None in logs without one
    with open(log_path, encoding="utf-8", errors="replace") as log:
        for line in log:
            named = EVAL_SPLIT_PATTERN.search(line)
            if named:
                split, after_marker = named.group(1), False
            if RESULT_MARKER in line:
                after_marker = True
            if after_marker and split in (None, "test"):
                match = ACCURACY_PATTERN.search(line)
                if match:
                    accuracy = float(match.group(1))
    return accuracy


@dataclass(frozen=True)
class Run:
    """One run folder of the tree; accuracy is None for a run that has not finished."""

    trainer: str
    config: str
    dataset: str
    shots: str
    seed: int
    name: str
    accuracy: float | None


def _subdirs(folder: Path, prefix: str = "") -> list[Path]:
    # is_dir() follows symlinks, so a domain-generalization source run linked to the
    # cross-dataset one is read like any other.
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith(prefix)
                  and not p.name.startswith("."))


def _seed_number(folder: Path) -> int | None:
    digits = folder.name[len("seed"):]
    return int(digits) if digits.isdigit() else None


def collect_runs(tree: Path) -> list[Run]:
    """Every run folder holding a log.txt, at the depth the scripts write them."""
    runs = []
    for trainer in _subdirs(tree):
        for config in _subdirs(trainer):
            for dataset in _subdirs(config):
                for shots in _subdirs(dataset, "shots_"):
                    for seed_folder in _subdirs(shots, "seed"):
                        seed = _seed_number(seed_folder)
                        if seed is None:
                            continue
                        for run in _subdirs(seed_folder):
                            log = run / "log.txt"
                            if log.is_file():
                                runs.append(Run(trainer.name, config.name, dataset.name,
                                                shots.name[len("shots_"):], seed, run.name,
                                                read_accuracy(log)))
    return runs


# ---------------------------------------------------------------------------- statistics


@dataclass
class Stat:
    """Seed statistics of one accuracy: mean and population std (ddof 0, as upstream)."""

    mean: float | None
    std: float | None
    seeds: dict[int, float] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.seeds)


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def population_std(values: list[float]) -> float:
    centre = mean(values)
    return math.sqrt(sum((v - centre) ** 2 for v in values) / len(values))


def summarize(per_seed: dict[int, float]) -> Stat:
    if not per_seed:
        return Stat(None, None, {})
    values = list(per_seed.values())
    return Stat(mean(values), population_std(values), dict(sorted(per_seed.items())))


def harmonic_mean(base: float | None, new: float | None) -> float | None:
    if base is None or new is None:
        return None
    if base + new == 0:
        return 0.0
    return 2 * base * new / (base + new)


def dataset_sort_key(name: str) -> tuple[int, str]:
    return (DATASET_ORDER.index(name) if name in DATASET_ORDER else len(DATASET_ORDER), name)


def _accuracy_by_seed(runs: list[Run], run_name: str) -> dict[int, float]:
    return {r.seed: r.accuracy for r in runs if r.name == run_name and r.accuracy is not None}


# ---------------------------------------------------------------------------- tables as data


@dataclass
class Base2NewRow:
    dataset: str
    base: Stat
    new: Stat
    hm: float | None
    hm_std: float | None


@dataclass
class Base2NewTable:
    trainer: str
    config: str
    shots: str
    rows: list[Base2NewRow]
    average: dict[str, float | int | None]
    protocol: str = BASE2NEW


@dataclass
class TransferRow:
    dataset: str
    role: str  # "source" or "target"
    accuracy: Stat


@dataclass
class TransferTable:
    protocol: str
    trainer: str
    config: str
    shots: str
    source: str
    rows: list[TransferRow]
    target_average: float | None
    targets_averaged: int


def build_base2new_row(dataset: str, runs: list[Run]) -> Base2NewRow:
    base_by_seed = _accuracy_by_seed(runs, BASE_RUN)
    new_by_seed = _accuracy_by_seed(runs, NEW_RUN)
    base, new = summarize(base_by_seed), summarize(new_by_seed)
    per_seed_hm = [harmonic_mean(base_by_seed[s], new_by_seed[s])
                   for s in base_by_seed if s in new_by_seed]
    return Base2NewRow(dataset, base, new, harmonic_mean(base.mean, new.mean),
                       population_std(per_seed_hm) if per_seed_hm else None)


def base2new_average(rows: list[Base2NewRow]) -> dict[str, float | int | None]:
    """HM of the averaged base and new accuracies, over datasets that have both."""
    complete = [r for r in rows if r.base.mean is not None and r.new.mean is not None]
    if not complete:
        return {"base": None, "new": None, "hm": None, "datasets": 0}
    base = mean([r.base.mean for r in complete])
    new = mean([r.new.mean for r in complete])
    return {"base": base, "new": new, "hm": harmonic_mean(base, new), "datasets": len(complete)}


def build_transfer_table(protocol: str, key: tuple[str, str, str], source: str,
                         runs: list[Run]) -> TransferTable:
    targets = sorted({r.name[len(TARGET_RUN_PREFIX):] for r in runs
                      if r.name.startswith(TARGET_RUN_PREFIX)}, key=dataset_sort_key)
    rows = [TransferRow(source, "source", summarize(_accuracy_by_seed(runs, SOURCE_RUN)))]
    rows += [TransferRow(t, "target", summarize(_accuracy_by_seed(runs, TARGET_RUN_PREFIX + t)))
             for t in targets]
    target_means = [r.accuracy.mean for r in rows[1:] if r.accuracy.mean is not None]
    return TransferTable(protocol, *key, source, rows,
                         mean(target_means) if target_means else None, len(target_means))


def transfer_protocol(tree: Path) -> str:
    return tree.name if tree.name in (CROSS_DATASET, DOMAIN_GENERALIZATION) else TRANSFER


def build_tables(tree: Path, runs: list[Run]) -> list[Base2NewTable | TransferTable]:
    """One table per trainer/config/shots for base-to-new, and per source for transfer."""
    groups: dict[tuple[str, str, str], dict[str, list[Run]]] = {}
    for run in runs:
        groups.setdefault((run.trainer, run.config, run.shots), {}).setdefault(run.dataset, []).append(run)
    tables: list[Base2NewTable | TransferTable] = []
    for key in sorted(groups):
        by_dataset = groups[key]
        base2new_rows = [build_base2new_row(name, by_dataset[name])
                         for name in sorted(by_dataset, key=dataset_sort_key)
                         if any(r.name in (BASE_RUN, NEW_RUN) for r in by_dataset[name])]
        if base2new_rows:
            tables.append(Base2NewTable(*key, base2new_rows, base2new_average(base2new_rows)))
        for source in sorted(by_dataset, key=dataset_sort_key):
            transfer_runs = [r for r in by_dataset[source]
                             if r.name == SOURCE_RUN
                             or (r.name.startswith(TARGET_RUN_PREFIX) and r.name != NEW_RUN)]
            if transfer_runs:
                tables.append(build_transfer_table(transfer_protocol(tree), key, source, transfer_runs))
    return tables


# ---------------------------------------------------------------------------- reference rows


def load_reference(path: Path | None) -> dict:
    if path is None:
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise SystemExit(f"error: reference file {path} does not exist") from None
    except json.JSONDecodeError as error:
        raise SystemExit(f"error: reference file {path} is not valid JSON: {error}") from None


def reference_method_for(trainer: str) -> str:
    return REFERENCE_NAME_OF_TRAINER.get(trainer, trainer)


def reference_protocols_for(protocol: str) -> list[str]:
    """A transfer tree of unknown name may match either published transfer table."""
    return [CROSS_DATASET, DOMAIN_GENERALIZATION] if protocol == TRANSFER else [protocol]


def reference_transfer_accuracy(reference: dict, protocol: str, method: str, dataset: str) -> float | None:
    for name in reference_protocols_for(protocol):
        value = reference.get(name, {}).get(method, {}).get("accuracy", {}).get(dataset)
        if value is not None:
            return value
    return None


def reference_transfer_average(reference: dict, protocol: str, method: str) -> float | None:
    for name in reference_protocols_for(protocol):
        value = reference.get(name, {}).get(method, {}).get("target_average")
        if value is not None:
            return value
    return None


def reference_base2new(reference: dict, method: str, dataset: str) -> dict | None:
    return reference.get(BASE2NEW, {}).get(method, {}).get(dataset)


# ---------------------------------------------------------------------------- Markdown


def fmt(value: float | None) -> str:
    return MISSING if value is None else f"{value:.2f}"


def fmt_stat(stat: Stat) -> str:
    return MISSING if stat.mean is None else f"{stat.mean:.2f} ± {stat.std:.2f}"


def fmt_published_triple(row: dict | None) -> str:
    if not row:
        return MISSING
    return f"{fmt(row.get('base'))} / {fmt(row.get('new'))} / {fmt(row.get('hm'))}"


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _markdown_rows(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return lines


def base2new_markdown(table: Base2NewTable, reference: dict) -> list[str]:
    method = reference_method_for(table.trainer)
    with_reference = method in reference.get(BASE2NEW, {})
    header = ["Dataset", "Base", "New", "HM", "Seeds (base/new)"]
    if with_reference:
        header.append(f"Published {method} (B / N / HM)")
    rows = []
    for row in table.rows:
        hm = MISSING if row.hm is None else f"{row.hm:.2f}" + (
            f" ± {row.hm_std:.2f}" if row.hm_std is not None else "")
        cells = [row.dataset, fmt_stat(row.base), fmt_stat(row.new), hm,
                 f"{row.base.count}/{row.new.count}"]
        if with_reference:
            cells.append(fmt_published_triple(reference_base2new(reference, method, row.dataset)))
        rows.append(cells)
    average = table.average
    cells = [f"**Average** ({plural(average['datasets'], 'dataset')})", fmt(average["base"]),
             fmt(average["new"]), fmt(average["hm"]), ""]
    if with_reference:
        cells.append(fmt_published_triple(reference_base2new(reference, method, "average")))
    rows.append(cells)
    title = f"### {BASE2NEW} — {table.trainer} / {table.config}, {table.shots} shots"
    return [title, ""] + _markdown_rows(header, rows)


def transfer_markdown(table: TransferTable, reference: dict) -> list[str]:
    method = reference_method_for(table.trainer)
    with_reference = any(method in reference.get(name, {})
                         for name in reference_protocols_for(table.protocol))
    header = ["Dataset", "Role", "Accuracy", "Seeds"]
    if with_reference:
        header.append(f"Published {method}")
    rows = []
    for row in table.rows:
        cells = [row.dataset, row.role, fmt_stat(row.accuracy), str(row.accuracy.count)]
        if with_reference:
            cells.append(fmt(reference_transfer_accuracy(reference, table.protocol, method, row.dataset)))
        rows.append(cells)
    cells = [f"**Target average** ({plural(table.targets_averaged, 'target')})", "", fmt(table.target_average), ""]
    if with_reference:
        cells.append(fmt(reference_transfer_average(reference, table.protocol, method)))
    rows.append(cells)
    title = (f"### {table.protocol} — {table.trainer} / {table.config}, {table.shots} shots, "
             f"source {table.source}")
    return [title, ""] + _markdown_rows(header, rows)


def render_markdown(tree: Path, tables: list, reference: dict) -> str:
    lines = [f"# Results: {tree}", ""]
    for table in tables:
        if isinstance(table, Base2NewTable):
            lines += base2new_markdown(table, reference)
        else:
            lines += transfer_markdown(table, reference)
        lines.append("")
    lines.append("Accuracy: top-1 %, mean ± population std over seeds. "
                 f"{MISSING} = no finished run found.")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- JSON


def tables_as_json(tree: Path, tables: list, reference_path: Path | None) -> dict:
    return {
        "tree": str(tree),
        "reference": str(reference_path) if reference_path else None,
        "tables": [asdict(table) for table in tables],
    }


# ---------------------------------------------------------------------------- plot


@dataclass
class BarSeries:
    """One group of bars: a label and a value per x position (None = no bar)."""

    label: str
    values: list[float | None]
    published: bool


def _reference_methods(tables: list, reference: dict, requested: list[str] | None) -> list[str]:
    if requested is not None:
        return requested
    wanted = [reference_method_for(t.trainer) for t in tables] + ["GOPro"]
    return list(dict.fromkeys(wanted))


def base2new_panels(tables: list[Base2NewTable], reference: dict,
                    methods: list[str]) -> list[tuple[str, list[str], list[BarSeries]]]:
    """One panel per metric (base, new, HM), x = datasets found and the average."""
    datasets = sorted({row.dataset for t in tables for row in t.rows}, key=dataset_sort_key)
    x_labels = datasets + ["average"]
    panels = []
    for metric in ("base", "new", "hm"):
        series = []
        for table in tables:
            by_dataset = {row.dataset: row for row in table.rows}
            values = [_row_metric(by_dataset.get(d), metric) for d in datasets]
            values.append(table.average[metric])
            series.append(BarSeries(f"{table.trainer}/{table.config} {table.shots}-shot", values, False))
        for method in methods:
            if method in reference.get(BASE2NEW, {}):
                values = [(reference_base2new(reference, method, d) or {}).get(metric) for d in x_labels]
                series.append(BarSeries(f"{method} (published)", values, True))
        panels.append((f"{BASE2NEW}: {metric if metric != 'hm' else 'HM'}", x_labels, series))
    return panels


def _row_metric(row: Base2NewRow | None, metric: str) -> float | None:
    if row is None:
        return None
    return {"base": row.base.mean, "new": row.new.mean, "hm": row.hm}[metric]


def transfer_panels(tables: list[TransferTable], reference: dict,
                    methods: list[str]) -> list[tuple[str, list[str], list[BarSeries]]]:
    """One panel per protocol and source, x = the source, its targets and their average."""
    panels = []
    for protocol, source in dict.fromkeys((t.protocol, t.source) for t in tables):
        group = [t for t in tables if (t.protocol, t.source) == (protocol, source)]
        datasets = [source] + sorted({r.dataset for t in group for r in t.rows if r.role == "target"},
                                     key=dataset_sort_key)
        series = []
        for table in group:
            by_dataset = {r.dataset: r.accuracy.mean for r in table.rows}
            values = [by_dataset.get(d) for d in datasets] + [table.target_average]
            series.append(BarSeries(f"{table.trainer}/{table.config} {table.shots}-shot", values, False))
        for method in methods:
            values = [reference_transfer_accuracy(reference, protocol, method, d) for d in datasets]
            values.append(reference_transfer_average(reference, protocol, method))
            if any(v is not None for v in values):
                series.append(BarSeries(f"{method} (published)", values, True))
        panels.append((f"{protocol}: source {source}", datasets + ["target avg"], series))
    return panels


def plot_panels(panels: list[tuple[str, list[str], list[BarSeries]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers
    import matplotlib.pyplot as plt

    width_inches = max(8.0, 0.9 * max(len(x) for _, x, _ in panels))
    figure, axes = plt.subplots(len(panels), 1, figsize=(width_inches, 3.2 * len(panels)), squeeze=False)
    for axis, (title, x_labels, series) in zip(axes[:, 0], panels):
        bar_width = 0.8 / max(1, len(series))
        for index, bars in enumerate(series):
            positions = [x + (index - (len(series) - 1) / 2) * bar_width
                         for x, v in enumerate(bars.values) if v is not None]
            heights = [v for v in bars.values if v is not None]
            axis.bar(positions, heights, bar_width, label=bars.label,
                     hatch="//" if bars.published else None, alpha=0.6 if bars.published else 1.0)
        axis.set_title(title)
        axis.set_xticks(range(len(x_labels)))
        axis.set_xticklabels(x_labels, rotation=30, ha="right", fontsize=8)
        axis.set_ylabel("top-1 accuracy (%)")
        axis.set_ylim(0, 100)
        axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside the bars
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_tables(tables: list, reference: dict, methods: list[str] | None, path: Path) -> None:
    chosen = _reference_methods(tables, reference, methods)
    base2new = [t for t in tables if isinstance(t, Base2NewTable)]
    transfer = [t for t in tables if isinstance(t, TransferTable)]
    panels = []
    if base2new:
        panels += base2new_panels(base2new, reference, chosen)
    if transfer:
        panels += transfer_panels(transfer, reference, chosen)
    plot_panels(panels, path)


# ---------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tree", type=Path, help="an output tree of one task, e.g. output/base2new")
    parser.add_argument("--reference", type=Path, default=None,
                        help="published rows to show beside the results, e.g. tools/reference_results.json")
    parser.add_argument("--reference-methods", default=None,
                        help="comma-separated methods of the reference file to plot "
                             "(default: the trainers found, and GOPro)")
    parser.add_argument("--plot", type=Path, default=None, help="PNG path (default: TREE/results.png)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tree: Path = args.tree
    if not tree.is_dir():
        print(f"error: {tree} is not a folder; give the output folder of one task, e.g. output/base2new",
              file=sys.stderr)
        return 1
    runs = collect_runs(tree)
    task_folders = [p.name for p in _subdirs(tree) if p.name in (BASE2NEW, CROSS_DATASET, DOMAIN_GENERALIZATION)]
    if task_folders and not runs:
        print(f"error: {tree} holds task folders ({', '.join(task_folders)}); give one of them, "
              f"e.g. {tree / task_folders[0]}", file=sys.stderr)
        return 1
    if not any(run.accuracy is not None for run in runs):
        print(f"error: no results under {tree}: expected "
              "<TRAINER>/<CFG>/<DATASET>/shots_<K>/seed<S>/<RUN>/log.txt with a '* accuracy:' line "
              "after '=> result' (written by scripts/train.sh and scripts/test.sh)", file=sys.stderr)
        return 1
    reference = load_reference(args.reference)
    methods = [m.strip() for m in args.reference_methods.split(",")] if args.reference_methods else None
    tables = build_tables(tree, runs)
    markdown = render_markdown(tree, tables, reference)
    print(markdown, end="")
    (tree / "results.md").write_text(markdown, encoding="utf-8")
    with open(tree / "results.json", "w", encoding="utf-8") as handle:
        json.dump(tables_as_json(tree, tables, args.reference), handle, indent=2)
    plot_path = args.plot or tree / "results.png"
    plot_tables(tables, reference, methods, plot_path)
    print(f"wrote {tree / 'results.md'}, {tree / 'results.json'} and {plot_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
