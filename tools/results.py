"""Tables and plots from the output tree of scripts/train.sh and scripts/test.sh.

    python tools/results.py output/base2new [--reference tools/reference_results.json]
                                            [--reference-methods GOPro,CoOp] [--plot PATH]

The tree is ``<TASK>/<TRAINER>/<CFG>/<DATASET>/shots_<K>/seed<S>/<RUN>/log.txt``, RUN being
``train_base`` and ``test_new`` (base-to-new), ``train_source`` and ``test_<target>``
(cross-dataset, domain generalisation) or ``train_all`` (few-shot, one ``shots_<K>`` per K). A log's
accuracy is read as upstream's ``parse_test_res.py --test-log`` reads it: the last ``* accuracy: X%``
line after ``=> result``; a figure that is not a finite number in 0-100 makes the log invalid, named
on stderr and under its table.

Prints one Markdown table per protocol and trainer/config (and shots) and writes ``results.md``,
``results.json`` and ``results.png`` into the tree (bars; accuracy against shots for few-shot). Every
accuracy is the mean ± population std over the seeds found, with ``n/N`` seeds: N seeds have a
folder, n of them a result; the others are listed under the table with the reason. Base-to-new HM is
2BN/(B+N) of the seed-averaged accuracies; its "± std" is the population std of the per-seed HMs. An
Average row averages the datasets (HM: of the averaged base and new, over datasets that have both);
its "± std" is over the per-seed averages of the seeds every averaged dataset has.
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
# Anything up to the "%" is taken, so that a malformed figure is reported rather than skipped.
ACCURACY_PATTERN = re.compile(r"\* accuracy: (\S+)%")
# The engine names the split before each evaluation; with TEST.FINAL_MODEL best_val a training log also
# holds per-epoch *val* results, which are never the run's result.
EVAL_SPLIT_PATTERN = re.compile(r"Evaluate on the \*(\w+)\* set")
MISSING = "—"

BASE_RUN = "train_base"
NEW_RUN = "test_new"
SOURCE_RUN = "train_source"
TARGET_RUN_PREFIX = "test_"
FEW_SHOT_RUN = "train_all"

BASE2NEW = "base2new"
CROSS_DATASET = "cross-dataset"
DOMAIN_GENERALIZATION = "domain-generalization"
FEW_SHOT = "few-shot"
TRANSFER = "transfer"  # a source/target tree whose folder name is not one of the two tasks
TASK_FOLDERS = (BASE2NEW, CROSS_DATASET, DOMAIN_GENERALIZATION, FEW_SHOT)

# Rows follow the order of the papers' tables; other datasets come after, by name.
DATASET_ORDER = [
    "imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
    "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101",
    "imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r",
]

# Trainer names of this repo -> method names used in the reference file.
REFERENCE_NAME_OF_TRAINER = {"ZeroshotCLIP": "CLIP"}


# ---------------------------------------------------------------------------- reading logs


class InvalidResult(ValueError):
    """A log's result line holds a figure that cannot be an accuracy."""


def parse_accuracy(text: str, log_path: Path) -> float:
    """The accuracy of ``* accuracy: TEXT%``; InvalidResult unless it is a finite number in [0, 100]."""
    try:
        value = float(text)
    except ValueError:
        raise InvalidResult(f"invalid result in {log_path}: '* accuracy: {text}%' is not a number") from None
    if not math.isfinite(value) or not 0.0 <= value <= 100.0:
        raise InvalidResult(f"invalid result in {log_path}: '* accuracy: {text}%' is not a percentage "
                            "in 0-100")
    return value


def read_accuracy(log_path: Path) -> float | None:
    """The last test-split accuracy printed after the result marker, or None when the run has none.

    Raises InvalidResult for a figure that is not an accuracy, OSError for a log that cannot be read.
    """
    figure = None
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
                    figure = match.group(1)
    return None if figure is None else parse_accuracy(figure, log_path)


@dataclass(frozen=True)
class Run:
    """One run folder of the tree; accuracy is None and problem says why for a run without a result."""

    trainer: str
    config: str
    dataset: str
    shots: str
    seed: int
    name: str
    accuracy: float | None
    problem: str | None = None
    bad_log: bool = False  # unreadable or invalid, as opposed to not finished yet


def read_run(run_dir: Path) -> tuple[float | None, str | None, bool]:
    """(accuracy, why there is none, whether the log is bad) of one run folder."""
    log = run_dir / "log.txt"
    if not log.exists():
        return None, f"no log.txt in {run_dir}", False
    try:
        accuracy = read_accuracy(log)
    except OSError as error:
        return None, f"unreadable log {log}: {error.strerror or error}", True
    except InvalidResult as error:
        return None, str(error), True
    if accuracy is None:
        return None, f"unfinished: no result in {log}", False
    return accuracy, None, False


def _subdirs(folder: Path, prefix: str = "") -> list[Path]:
    # is_dir() follows symlinks, so a domain-generalization source run linked to the
    # cross-dataset one is read like any other.
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith(prefix)
                  and not p.name.startswith("."))


def _seed_number(folder: Path) -> int | None:
    digits = folder.name[len("seed"):]
    return int(digits) if digits.isdigit() else None


def collect_runs(tree: Path) -> list[Run]:
    """Every run folder at the depth the scripts write them, with its accuracy or why it has none."""
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
                            runs.append(Run(trainer.name, config.name, dataset.name, shots.name[len("shots_"):],
                                            seed, run.name, *read_run(run)))
    return runs


# ---------------------------------------------------------------------------- statistics


@dataclass
class Stat:
    """Seed statistics of one accuracy: mean and population std (ddof 0, as upstream).

    ``expected`` are the seeds that have a folder for this dataset; ``missing`` says, for each of
    them without a result, why.
    """

    mean: float | None
    std: float | None
    seeds: dict[int, float] = field(default_factory=dict)
    expected: list[int] = field(default_factory=list)
    missing: dict[int, str] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.seeds)

    @property
    def seed_fraction(self) -> str:
        """``n/N``: seeds with a result over seeds expected."""
        return f"{self.count}/{len(self.expected)}"


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def population_std(values: list[float]) -> float:
    centre = mean(values)
    return math.sqrt(sum((v - centre) ** 2 for v in values) / len(values))


def summarize(per_seed: dict[int, float], expected: set[int] | None = None,
              reasons: dict[int, str] | None = None) -> Stat:
    """Mean and std over ``per_seed``; each expected seed without a value is listed with its reason."""
    expected_seeds = sorted(set(per_seed) | (expected or set()))
    missing = {s: (reasons or {}).get(s, "not run yet") for s in expected_seeds if s not in per_seed}
    if not per_seed:
        return Stat(None, None, {}, expected_seeds, missing)
    values = list(per_seed.values())
    return Stat(mean(values), population_std(values), dict(sorted(per_seed.items())), expected_seeds, missing)


def summarize_runs(runs: list[Run], run_name: str, expected: set[int]) -> Stat:
    """The Stat of the runs named ``run_name``, over the seeds ``expected``."""
    named = [r for r in runs if r.name == run_name]
    return summarize({r.seed: r.accuracy for r in named if r.accuracy is not None}, expected,
                     {r.seed: r.problem for r in named if r.problem})


def harmonic_mean(base: float | None, new: float | None) -> float | None:
    if base is None or new is None:
        return None
    if base + new == 0:
        return 0.0
    return 2 * base * new / (base + new)


def per_seed_average(stats: list[Stat]) -> dict[int, float]:
    """Seed -> mean over ``stats``, for the seeds every one of them has."""
    if not stats:
        return {}
    common = set.intersection(*(set(s.seeds) for s in stats))
    return {seed: mean([s.seeds[seed] for s in stats]) for seed in sorted(common)}


def std_or_none(values: list[float]) -> float | None:
    return population_std(values) if values else None


def dataset_sort_key(name: str) -> tuple[int, str]:
    return (DATASET_ORDER.index(name) if name in DATASET_ORDER else len(DATASET_ORDER), name)


def _seeds(runs: list[Run]) -> set[int]:
    return {r.seed for r in runs}


def missing_lines(label: str, stat: Stat) -> list[str]:
    """One note per expected seed of ``stat`` without a result."""
    return [f"{label}, seed {seed}: {reason}" for seed, reason in stat.missing.items()]


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
    missing: list[str] = field(default_factory=list)
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
    target_average_std: float | None = None
    target_average_seeds: int = 0
    missing: list[str] = field(default_factory=list)


@dataclass
class FewShotRow:
    dataset: str
    accuracy: dict[str, Stat]  # shots (as in the folder name) -> accuracy


@dataclass
class FewShotTable:
    trainer: str
    config: str
    shots: list[str]  # in increasing order
    rows: list[FewShotRow]
    average: dict[str, dict[str, float | int | None]]  # shots -> mean, std, datasets, seeds
    missing: list[str] = field(default_factory=list)
    protocol: str = FEW_SHOT


def build_base2new_row(dataset: str, runs: list[Run]) -> Base2NewRow:
    expected = _seeds(runs)
    base, new = summarize_runs(runs, BASE_RUN, expected), summarize_runs(runs, NEW_RUN, expected)
    per_seed_hm = [harmonic_mean(base.seeds[s], new.seeds[s]) for s in base.seeds if s in new.seeds]
    return Base2NewRow(dataset, base, new, harmonic_mean(base.mean, new.mean), std_or_none(per_seed_hm))


def base2new_average(rows: list[Base2NewRow]) -> dict[str, float | int | None]:
    """HM of the averaged base and new accuracies, over datasets that have both; std over common seeds."""
    complete = [r for r in rows if r.base.mean is not None and r.new.mean is not None]
    if not complete:
        return {"base": None, "new": None, "hm": None, "datasets": 0,
                "base_std": None, "new_std": None, "hm_std": None, "seeds": 0}
    base = mean([r.base.mean for r in complete])
    new = mean([r.new.mean for r in complete])
    base_by_seed = per_seed_average([r.base for r in complete])
    new_by_seed = per_seed_average([r.new for r in complete])
    both = [s for s in base_by_seed if s in new_by_seed]
    return {"base": base, "new": new, "hm": harmonic_mean(base, new), "datasets": len(complete),
            "base_std": std_or_none([base_by_seed[s] for s in both]),
            "new_std": std_or_none([new_by_seed[s] for s in both]),
            "hm_std": std_or_none([harmonic_mean(base_by_seed[s], new_by_seed[s]) for s in both]),
            "seeds": len(both)}


def build_base2new_table(key: tuple[str, str, str], by_dataset: dict[str, list[Run]]) -> Base2NewTable | None:
    rows = [build_base2new_row(name, by_dataset[name])
            for name in sorted(by_dataset, key=dataset_sort_key)
            if any(r.name in (BASE_RUN, NEW_RUN) for r in by_dataset[name])]
    if not rows:
        return None
    missing = [line for row in rows
               for line in missing_lines(f"{row.dataset} base", row.base) + missing_lines(f"{row.dataset} new", row.new)]
    return Base2NewTable(*key, rows, base2new_average(rows), missing)


def build_transfer_table(protocol: str, key: tuple[str, str, str], source: str,
                         runs: list[Run]) -> TransferTable:
    expected = _seeds(runs)
    targets = sorted({r.name[len(TARGET_RUN_PREFIX):] for r in runs
                      if r.name.startswith(TARGET_RUN_PREFIX)}, key=dataset_sort_key)
    rows = [TransferRow(source, "source", summarize_runs(runs, SOURCE_RUN, expected))]
    rows += [TransferRow(t, "target", summarize_runs(runs, TARGET_RUN_PREFIX + t, expected)) for t in targets]
    averaged = [r.accuracy for r in rows[1:] if r.accuracy.mean is not None]
    by_seed = per_seed_average(averaged)
    missing = [line for r in rows for line in missing_lines(f"{r.dataset} ({r.role})", r.accuracy)]
    return TransferTable(protocol, *key, source, rows,
                         mean([a.mean for a in averaged]) if averaged else None, len(averaged),
                         std_or_none(list(by_seed.values())), len(by_seed), missing)


def _shots_key(shots: str) -> tuple[int, str]:
    return (int(shots), shots) if shots.isdigit() else (sys.maxsize, shots)


def build_few_shot_table(key: tuple[str, str], runs: list[Run]) -> FewShotTable:
    """Datasets as rows, shots as columns; the Average row averages the datasets at each shots."""
    shots_values = sorted({r.shots for r in runs}, key=_shots_key)
    rows, missing = [], []
    for dataset in sorted({r.dataset for r in runs}, key=dataset_sort_key):
        accuracy = {}
        for shots in shots_values:
            group = [r for r in runs if r.dataset == dataset and r.shots == shots]
            if group:
                accuracy[shots] = summarize_runs(group, FEW_SHOT_RUN, _seeds(group))
                missing += missing_lines(f"{dataset} {shots} shots", accuracy[shots])
        rows.append(FewShotRow(dataset, accuracy))
    average = {}
    for shots in shots_values:
        stats = [row.accuracy[shots] for row in rows
                 if shots in row.accuracy and row.accuracy[shots].mean is not None]
        by_seed = per_seed_average(stats)
        average[shots] = {"mean": mean([s.mean for s in stats]) if stats else None,
                          "std": std_or_none(list(by_seed.values())),
                          "datasets": len(stats), "seeds": len(by_seed)}
    return FewShotTable(*key, shots_values, rows, average, missing)


def transfer_protocol(tree: Path) -> str:
    return tree.name if tree.name in (CROSS_DATASET, DOMAIN_GENERALIZATION) else TRANSFER


def build_tables(tree: Path, runs: list[Run]) -> list[Base2NewTable | TransferTable | FewShotTable]:
    """One table per trainer/config/shots for base-to-new, per source for transfer, per
    trainer/config for few-shot (all shots in one table)."""
    tables: list[Base2NewTable | TransferTable | FewShotTable] = []
    few_shot: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        if run.name == FEW_SHOT_RUN:
            few_shot.setdefault((run.trainer, run.config), []).append(run)
    groups: dict[tuple[str, str, str], dict[str, list[Run]]] = {}
    for run in runs:
        if run.name != FEW_SHOT_RUN:
            groups.setdefault((run.trainer, run.config, run.shots), {}).setdefault(run.dataset, []).append(run)
    for key in sorted(groups):
        by_dataset = groups[key]
        base2new = build_base2new_table(key, by_dataset)
        if base2new is not None:
            tables.append(base2new)
        for source in sorted(by_dataset, key=dataset_sort_key):
            transfer_runs = [r for r in by_dataset[source]
                             if r.name == SOURCE_RUN
                             or (r.name.startswith(TARGET_RUN_PREFIX) and r.name != NEW_RUN)]
            if transfer_runs:
                tables.append(build_transfer_table(transfer_protocol(tree), key, source, transfer_runs))
    tables += [build_few_shot_table(key, few_shot[key]) for key in sorted(few_shot)]
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


def fmt_mean_std(value: float | None, std: float | None) -> str:
    if value is None:
        return MISSING
    return f"{value:.2f}" + (f" ± {std:.2f}" if std is not None else "")


def fmt_stat(stat: Stat) -> str:
    return fmt_mean_std(stat.mean, stat.std)


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


def missing_markdown(missing: list[str]) -> list[str]:
    """The seeds a table lacks, one bullet each, so that n/N < N/N never goes unexplained."""
    if not missing:
        return []
    return ["", "Seeds without a result:"] + [f"- {line}" for line in missing]


def base2new_markdown(table: Base2NewTable, reference: dict) -> list[str]:
    method = reference_method_for(table.trainer)
    with_reference = method in reference.get(BASE2NEW, {})
    header = ["Dataset", "Base", "New", "HM", "Seeds (base, new)"]
    if with_reference:
        header.append(f"Published {method} (B / N / HM)")
    rows = []
    for row in table.rows:
        cells = [row.dataset, fmt_stat(row.base), fmt_stat(row.new), fmt_mean_std(row.hm, row.hm_std),
                 f"{row.base.seed_fraction}, {row.new.seed_fraction}"]
        if with_reference:
            cells.append(fmt_published_triple(reference_base2new(reference, method, row.dataset)))
        rows.append(cells)
    average = table.average
    cells = [f"**Average** ({plural(average['datasets'], 'dataset')})",
             fmt_mean_std(average["base"], average.get("base_std")),
             fmt_mean_std(average["new"], average.get("new_std")),
             fmt_mean_std(average["hm"], average.get("hm_std")),
             f"{plural(average.get('seeds', 0), 'common seed')}"]
    if with_reference:
        cells.append(fmt_published_triple(reference_base2new(reference, method, "average")))
    rows.append(cells)
    title = f"### {BASE2NEW} — {table.trainer} / {table.config}, {table.shots} shots"
    return [title, ""] + _markdown_rows(header, rows) + missing_markdown(table.missing)


def transfer_markdown(table: TransferTable, reference: dict) -> list[str]:
    method = reference_method_for(table.trainer)
    with_reference = any(method in reference.get(name, {})
                         for name in reference_protocols_for(table.protocol))
    header = ["Dataset", "Role", "Accuracy", "Seeds"]
    if with_reference:
        header.append(f"Published {method}")
    rows = []
    for row in table.rows:
        cells = [row.dataset, row.role, fmt_stat(row.accuracy), row.accuracy.seed_fraction]
        if with_reference:
            cells.append(fmt(reference_transfer_accuracy(reference, table.protocol, method, row.dataset)))
        rows.append(cells)
    cells = [f"**Target average** ({plural(table.targets_averaged, 'target')})", "",
             fmt_mean_std(table.target_average, table.target_average_std),
             plural(table.target_average_seeds, "common seed")]
    if with_reference:
        cells.append(fmt(reference_transfer_average(reference, table.protocol, method)))
    rows.append(cells)
    title = (f"### {table.protocol} — {table.trainer} / {table.config}, {table.shots} shots, "
             f"source {table.source}")
    return [title, ""] + _markdown_rows(header, rows) + missing_markdown(table.missing)


def few_shot_markdown(table: FewShotTable) -> list[str]:
    header = ["Dataset"] + [plural(int(k), "shot") if k.isdigit() else k for k in table.shots]
    rows = []
    for row in table.rows:
        cells = [row.dataset]
        for shots in table.shots:
            stat = row.accuracy.get(shots)
            cells.append(MISSING if stat is None else f"{fmt_stat(stat)} ({stat.seed_fraction})")
        rows.append(cells)
    cells = ["**Average**"]
    for shots in table.shots:
        average = table.average[shots]
        cells.append(f"{fmt_mean_std(average['mean'], average['std'])} "
                     f"({plural(average['datasets'], 'dataset')}, {plural(average['seeds'], 'common seed')})")
    rows.append(cells)
    title = f"### {FEW_SHOT} — {table.trainer} / {table.config}"
    return [title, ""] + _markdown_rows(header, rows) + missing_markdown(table.missing)


def render_markdown(tree: Path, tables: list, reference: dict) -> str:
    lines = [f"# Results: {tree}", ""]
    for table in tables:
        if isinstance(table, Base2NewTable):
            lines += base2new_markdown(table, reference)
        elif isinstance(table, TransferTable):
            lines += transfer_markdown(table, reference)
        else:
            lines += few_shot_markdown(table)
        lines.append("")
    lines.append("Accuracy: top-1 %, mean ± population std over seeds; n/N = seeds with a result / seeds "
                 "with a folder (few-shot: in brackets). Averages: ± std of the per-seed averages over the "
                 f"seeds common to every averaged dataset. {MISSING} = no finished run found.")
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


@dataclass
class BarPanel:
    title: str
    x_labels: list[str]
    series: list[BarSeries]


@dataclass
class LineSeries:
    """Accuracy against shots of one trainer/config: mean and seed std at each shots it has."""

    label: str
    shots: list[int]
    means: list[float]
    stds: list[float]


@dataclass
class LinePanel:
    title: str
    series: list[LineSeries]


def _reference_methods(tables: list, reference: dict, requested: list[str] | None) -> list[str]:
    if requested is not None:
        return requested
    wanted = [reference_method_for(t.trainer) for t in tables] + ["GOPro"]
    return list(dict.fromkeys(wanted))


def base2new_panels(tables: list[Base2NewTable], reference: dict, methods: list[str]) -> list[BarPanel]:
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
        panels.append(BarPanel(f"{BASE2NEW}: {metric if metric != 'hm' else 'HM'}", x_labels, series))
    return panels


def _row_metric(row: Base2NewRow | None, metric: str) -> float | None:
    if row is None:
        return None
    return {"base": row.base.mean, "new": row.new.mean, "hm": row.hm}[metric]


def transfer_panels(tables: list[TransferTable], reference: dict, methods: list[str]) -> list[BarPanel]:
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
        panels.append(BarPanel(f"{protocol}: source {source}", datasets + ["target avg"], series))
    return panels


def few_shot_panels(tables: list[FewShotTable]) -> list[LinePanel]:
    """One panel per dataset, and the average over datasets when there are several; a line per table."""
    datasets = sorted({row.dataset for t in tables for row in t.rows}, key=dataset_sort_key)
    panels = []
    for dataset in datasets:
        series = []
        for table in tables:
            row = next((r for r in table.rows if r.dataset == dataset), None)
            points = [(int(k), s.mean, s.std) for k, s in (row.accuracy.items() if row else ())
                      if k.isdigit() and s.mean is not None]
            if points:
                series.append(LineSeries(f"{table.trainer}/{table.config}", *map(list, zip(*sorted(points)))))
        panels.append(LinePanel(f"{FEW_SHOT}: {dataset}", series))
    if len(datasets) > 1:
        series = []
        for table in tables:
            points = [(int(k), a["mean"], a["std"] or 0.0) for k, a in table.average.items()
                      if k.isdigit() and a["mean"] is not None]
            if points:
                series.append(LineSeries(f"{table.trainer}/{table.config}", *map(list, zip(*sorted(points)))))
        panels.append(LinePanel(f"{FEW_SHOT}: average over datasets", series))
    return panels


def _draw_bars(axis, panel: BarPanel) -> None:
    bar_width = 0.8 / max(1, len(panel.series))
    for index, bars in enumerate(panel.series):
        positions = [x + (index - (len(panel.series) - 1) / 2) * bar_width
                     for x, v in enumerate(bars.values) if v is not None]
        heights = [v for v in bars.values if v is not None]
        axis.bar(positions, heights, bar_width, label=bars.label,
                 hatch="//" if bars.published else None, alpha=0.6 if bars.published else 1.0)
    axis.set_xticks(range(len(panel.x_labels)))
    axis.set_xticklabels(panel.x_labels, rotation=30, ha="right", fontsize=8)
    axis.set_ylim(0, 100)


def _draw_lines(axis, panel: LinePanel) -> None:
    """Accuracy against shots, shots evenly spaced as in CoOp's figure; the band is ± the seed std."""
    shots = sorted({k for line in panel.series for k in line.shots})
    position = {k: i for i, k in enumerate(shots)}
    for line in panel.series:
        xs = [position[k] for k in line.shots]
        low = [m - s for m, s in zip(line.means, line.stds)]
        high = [m + s for m, s in zip(line.means, line.stds)]
        if len(xs) == 1:  # e.g. zero-shot CLIP at 0 shots: a point with its spread
            axis.errorbar(xs, line.means, yerr=line.stds, fmt="*", markersize=10, capsize=3, label=line.label)
            continue
        (drawn,) = axis.plot(xs, line.means, marker="o", label=line.label)
        axis.fill_between(xs, low, high, color=drawn.get_color(), alpha=0.2, linewidth=0)
    axis.set_xticks(range(len(shots)))
    axis.set_xticklabels([str(k) for k in shots])
    axis.set_xlabel("training images per class (shots)")


def plot_panels(panels: list[BarPanel | LinePanel], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers
    import matplotlib.pyplot as plt

    widths = [0.9 * len(p.x_labels) for p in panels if isinstance(p, BarPanel)]
    width_inches = max([8.0] + widths)
    figure, axes = plt.subplots(len(panels), 1, figsize=(width_inches, 3.2 * len(panels)), squeeze=False)
    for axis, panel in zip(axes[:, 0], panels):
        if isinstance(panel, BarPanel):
            _draw_bars(axis, panel)
        else:
            _draw_lines(axis, panel)
        axis.set_title(panel.title)
        axis.set_ylabel("top-1 accuracy (%)")
        axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside the plot
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_tables(tables: list, reference: dict, methods: list[str] | None, path: Path) -> None:
    chosen = _reference_methods(tables, reference, methods)
    base2new = [t for t in tables if isinstance(t, Base2NewTable)]
    transfer = [t for t in tables if isinstance(t, TransferTable)]
    few_shot = [t for t in tables if isinstance(t, FewShotTable)]
    panels: list[BarPanel | LinePanel] = []
    if base2new:
        panels += base2new_panels(base2new, reference, chosen)
    if transfer:
        panels += transfer_panels(transfer, reference, chosen)
    if few_shot:
        panels += few_shot_panels(few_shot)
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
    for run in runs:
        if run.bad_log:
            print(f"warning: {run.problem}; seed {run.seed} of {run.dataset} is left out", file=sys.stderr)
    task_folders = [p.name for p in _subdirs(tree) if p.name in TASK_FOLDERS]
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
        # allow_nan=False: every figure was checked, so a NaN here would be a bug, never a table entry.
        json.dump(tables_as_json(tree, tables, args.reference), handle, indent=2, allow_nan=False)
    plot_path = args.plot or tree / "results.png"
    plot_tables(tables, reference, methods, plot_path)
    print(f"wrote {tree / 'results.md'}, {tree / 'results.json'} and {plot_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
