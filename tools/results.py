"""Tables and figures from the output tree of scripts/train.sh and scripts/test.sh.

    python tools/results.py output/base2new [--detail] [--reference tools/reference_results.json]
                                            [--reference-methods GOPro,CoOp] [--plot PATH]

The tree is ``<TASK>/<TRAINER>/<CONFIG>/<DATASET>/shots_<K>/seed<S>/<RUN>/log.txt`` (CONFIG: the trainer config
and the settings given on top of it, or a TAG; K = 0 for a trainer that learns nothing), RUN being
``train_base`` and ``test_new`` (base-to-new), ``train_source`` and ``test_<target>`` (cross-dataset, domain
generalisation) or ``train_all`` (few-shot, one ``shots_<K>`` per K). A log's accuracy is read as upstream's
``parse_test_res.py --test-log`` reads it: the last ``* accuracy: X%`` line after ``=> result``; a figure that
is not a finite number in 0-100 makes the log invalid, named on stderr and under its table. A training log's
``* accuracy at initialisation: X%`` line (the model before its first step) gives the "at init" figures; a
trainer that learns nothing (shots_0) is at its initialisation.

Prints, for the protocol of the tree, one comparison table: a row per trainer/configuration/shots (base-to-new:
one per metric, base, new and HM), a column per dataset (base-to-new), per target after the source (transfer)
or per number of shots (few-shot, with a row per dataset), and the average over datasets or targets.
``--detail`` adds one table per trainer/configuration. Writes ``results.md``, ``results.json`` and the figure,
``results.png`` and ``results.pdf``, into the tree.

Every figure is the mean ± population std over the seeds found, marked ``(n=N)`` when all N seeds with a folder
have a result and ``(n/N)`` when not (the others are listed under the table with the reason); one seed has no
spread. Seeds of different configurations are never averaged together: each configuration is its own row.
Base-to-new HM is 2BN/(B+N) of the seed-averaged accuracies; its "± std" is the population std of the per-seed
HMs. An average over datasets (or targets) averages their means (HM: of the averaged base and new, over datasets
that have both); its "± std" is over the per-seed averages of the seeds every averaged dataset has, which are
its n.

A run that went on after a warning (a ``WARNING:`` line in its log.txt: e.g. N_CTX other than CTX_INIT's
tokens, a memory budget with no effect, evaluation in another precision) is noted under the table, each
distinct warning once per seed with the runs that logged it, and every figure that includes that seed is marked
``†``; an evaluation counts the warnings of the training run whose model it evaluates. results.json has them
as each table's ``warnings`` and each figure's ``warned`` seeds.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools.results_figures, from any folder

RESULT_MARKER = "=> result"
# Anything up to the "%" is taken, so that a malformed figure is reported rather than skipped.
ACCURACY_PATTERN = re.compile(r"\* accuracy: (\S+)%")
# The model before its first training step (TEST.AT_START), printed by the engine in a training log.
AT_INIT_PATTERN = re.compile(r"\* accuracy at initialisation: (\S+)%")
# The engine names the split before each evaluation; with TEST.FINAL_MODEL best_val a training log also
# holds per-epoch *val* results, which are never the run's result.
EVAL_SPLIT_PATTERN = re.compile(r"Evaluate on the \*(\w+)\* set")
MISSING = "—"
# The engine starts each warn-and-go-on line with this; a figure with such a seed is marked with WARNED_MARK.
WARNING_PREFIX = "WARNING:"
WARNED_MARK = "†"

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

ZERO_SHOTS = "0"  # the shots folder of a trainer that learns nothing

# The reference file's row of CLIP without learned prompts: the published figure of any trainer that learns
# nothing (its runs are under shots_0).
ZERO_SHOT_REFERENCE = "CLIP"


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


def read_figures(log_path: Path) -> tuple[float | None, float | None]:
    """(the last test-split accuracy printed after the result marker, the last accuracy at initialisation),
    each None when the log has none.

    Raises InvalidResult for a figure that is not an accuracy, OSError for a log that cannot be read.
    """
    figure = at_init = None
    after_marker = False
    split = None  # the split of the latest "Evaluate on the *X* set" line; None in logs without one
    with open(log_path, encoding="utf-8", errors="replace") as log:
        for line in log:
            named = EVAL_SPLIT_PATTERN.search(line)
            if named:
                split, after_marker = named.group(1), False
            if RESULT_MARKER in line:
                after_marker = True
            initial = AT_INIT_PATTERN.search(line)
            if initial:
                at_init = initial.group(1)
            if after_marker and split in (None, "test"):
                match = ACCURACY_PATTERN.search(line)
                if match:
                    figure = match.group(1)
    return (None if figure is None else parse_accuracy(figure, log_path),
            None if at_init is None else parse_accuracy(at_init, log_path))


def read_warnings(log_path: Path) -> tuple[str, ...]:
    """The distinct ``WARNING:`` lines of a log (without the prefix), in the order first logged."""
    with open(log_path, encoding="utf-8", errors="replace") as log:
        lines = [line[len(WARNING_PREFIX):].strip() for line in log if line.startswith(WARNING_PREFIX)]
    return tuple(dict.fromkeys(lines))


def read_accuracy(log_path: Path) -> float | None:
    """The last test-split accuracy printed after the result marker, or None when the run has none."""
    return read_figures(log_path)[0]


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
    at_init: float | None = None  # the accuracy before the first step, when the log has it
    warnings: tuple[str, ...] = ()  # the log's distinct WARNING lines

    @property
    def initial_accuracy(self) -> float | None:
        """Accuracy at initialisation: the logged one, or the result of a run that learns nothing (0 shots)."""
        if self.at_init is not None:
            return self.at_init
        return self.accuracy if self.shots == ZERO_SHOTS else None


def read_run(run_dir: Path) -> tuple[float | None, str | None, bool, float | None, tuple[str, ...]]:
    """(accuracy, why there is none, whether the log is bad, accuracy at initialisation, its WARNING lines) of
    one run folder."""
    log = run_dir / "log.txt"
    if not log.exists():
        return None, f"no log.txt in {run_dir}", False, None, ()
    try:
        accuracy, at_init = read_figures(log)
        warnings = read_warnings(log)
    except OSError as error:
        return None, f"unreadable log {log}: {error.strerror or error}", True, None, ()
    except InvalidResult as error:
        return None, str(error), True, None, ()
    if accuracy is None:
        return None, f"unfinished: no result in {log}", False, at_init, warnings
    return accuracy, None, False, at_init, warnings


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
    warned: list[int] = field(default_factory=list)  # seeds of the figure whose runs logged a WARNING

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
              reasons: dict[int, str] | None = None, warned: set[int] | None = None) -> Stat:
    """Mean and std over ``per_seed``; each expected seed without a value is listed with its reason, and the
    seeds of ``warned`` that have a value are kept as the figure's warned seeds."""
    expected_seeds = sorted(set(per_seed) | (expected or set()))
    missing = {s: (reasons or {}).get(s, "not run yet") for s in expected_seeds if s not in per_seed}
    if not per_seed:
        return Stat(None, None, {}, expected_seeds, missing)
    values = list(per_seed.values())
    return Stat(mean(values), population_std(values), dict(sorted(per_seed.items())), expected_seeds, missing,
                sorted(s for s in (warned or ()) if s in per_seed))


def warned_seeds(runs: list[Run], *names: str) -> set[int]:
    """Seeds of which a run named one of ``names`` logged a WARNING."""
    return {r.seed for r in runs if r.warnings and r.name in names}


def summarize_runs(runs: list[Run], run_name: str, expected: set[int], trained_by: str | None = None) -> Stat:
    """The Stat of the runs named ``run_name``, over the seeds ``expected``; an evaluation's figure is warned
    by its own run and by ``trained_by``, the training run whose model it evaluates."""
    named = [r for r in runs if r.name == run_name]
    return summarize({r.seed: r.accuracy for r in named if r.accuracy is not None}, expected,
                     {r.seed: r.problem for r in named if r.problem},
                     warned_seeds(runs, run_name, *([trained_by] if trained_by else [])))


def summarize_initial(runs: list[Run], run_name: str) -> Stat:
    """The Stat of the accuracies at initialisation of the runs named ``run_name`` that logged one."""
    named = [r for r in runs if r.name == run_name and r.initial_accuracy is not None]
    return summarize({r.seed: r.initial_accuracy for r in named}, warned=warned_seeds(named, run_name))


@dataclass
class RunWarning:
    """A WARNING line of one seed's logs, with the runs that logged it."""

    dataset: str
    shots: str
    seed: int
    runs: list[str]
    warning: str


def _training_first(run: Run) -> tuple[bool, str]:
    return (not run.name.startswith("train"), run.name)


def collect_warnings(runs: list[Run]) -> list[RunWarning]:
    """Each distinct WARNING line once per dataset, shots and seed, naming the runs that logged it (training
    runs first)."""
    grouped: dict[tuple[str, str, int], dict[str, list[str]]] = {}
    for run in sorted(runs, key=lambda r: (dataset_sort_key(r.dataset), _shots_key(r.shots), r.seed,
                                           _training_first(r))):
        for warning in run.warnings:
            grouped.setdefault((run.dataset, run.shots, run.seed), {}).setdefault(warning, []).append(run.name)
    return [RunWarning(dataset, shots, seed, names, warning)
            for (dataset, shots, seed), by_text in grouped.items() for warning, names in by_text.items()]


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
    hm_seeds: int = 0  # seeds with both a base and a new result
    at_init: Stat | None = None  # base accuracy before training
    hm_warned: list[int] = field(default_factory=list)  # seeds of the HM whose base or new runs logged a WARNING


@dataclass
class Base2NewTable:
    trainer: str
    config: str
    shots: str
    rows: list[Base2NewRow]
    average: dict[str, float | int | None]
    missing: list[str] = field(default_factory=list)
    protocol: str = BASE2NEW
    logs_at_init: bool = False  # a log of the table has an accuracy at initialisation line
    warnings: list[RunWarning] = field(default_factory=list)


@dataclass
class TransferRow:
    dataset: str
    role: str  # "source" or "target"
    accuracy: Stat
    at_init: Stat | None = None  # the source's accuracy before training


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
    target_average_expected: int = 0  # seeds with a folder for the averaged targets
    logs_at_init: bool = False  # a log of the table has an accuracy at initialisation line
    target_average_warned: bool = False  # an averaged target figure has a warned seed
    warnings: list[RunWarning] = field(default_factory=list)


@dataclass
class FewShotRow:
    dataset: str
    accuracy: dict[str, Stat]  # shots (as in the folder name) -> accuracy
    at_init: dict[str, Stat] = field(default_factory=dict)  # shots -> accuracy before training


@dataclass
class FewShotTable:
    trainer: str
    config: str
    shots: list[str]  # in increasing order
    rows: list[FewShotRow]
    average: dict[str, dict[str, float | int | None]]  # shots -> mean, std, datasets, seeds (and at init)
    missing: list[str] = field(default_factory=list)
    protocol: str = FEW_SHOT
    logs_at_init: bool = False  # a log of the table has an accuracy at initialisation line
    warnings: list[RunWarning] = field(default_factory=list)


def average_of(stats: list[Stat]) -> dict[str, float | int | None]:
    """Mean over ``stats`` of their means (those with one), its std over the per-seed averages of the seeds
    they all have, how many were averaged, those common seeds, the seeds expected and whether an averaged
    figure has a warned seed."""
    present = [s for s in stats if s.mean is not None]
    by_seed = per_seed_average(present)
    return {"mean": mean([s.mean for s in present]) if present else None,
            "std": std_or_none(list(by_seed.values())), "datasets": len(present), "seeds": len(by_seed),
            "expected_seeds": len(set().union(*(s.expected for s in present))) if present else 0,
            "warned": any(s.warned for s in present)}


def build_base2new_row(dataset: str, runs: list[Run]) -> Base2NewRow:
    expected = _seeds(runs)
    base = summarize_runs(runs, BASE_RUN, expected)
    new = summarize_runs(runs, NEW_RUN, expected, trained_by=BASE_RUN)
    per_seed_hm = [harmonic_mean(base.seeds[s], new.seeds[s]) for s in base.seeds if s in new.seeds]
    hm_warned = sorted(s for s in set(base.warned) | set(new.warned) if s in base.seeds and s in new.seeds)
    return Base2NewRow(dataset, base, new, harmonic_mean(base.mean, new.mean), std_or_none(per_seed_hm),
                       len(per_seed_hm), summarize_initial(runs, BASE_RUN), hm_warned)


def base2new_average(rows: list[Base2NewRow]) -> dict[str, float | int | None]:
    """HM of the averaged base and new accuracies, over datasets that have both; std over common seeds.
    The base accuracy at initialisation is averaged over the datasets that have it."""
    initial = average_of([r.at_init for r in rows if r.at_init is not None])
    at_init = {"at_init": initial["mean"], "at_init_std": initial["std"], "at_init_datasets": initial["datasets"],
               "at_init_seeds": initial["seeds"], "at_init_expected_seeds": initial["expected_seeds"],
               "at_init_warned": initial["warned"]}
    complete = [r for r in rows if r.base.mean is not None and r.new.mean is not None]
    warned = {"base_warned": any(r.base.warned for r in complete), "new_warned": any(r.new.warned for r in complete),
              "hm_warned": any(r.hm_warned for r in complete)}
    if not complete:
        return {"base": None, "new": None, "hm": None, "datasets": 0,
                "base_std": None, "new_std": None, "hm_std": None, "seeds": 0, "expected_seeds": 0, **warned,
                **at_init}
    base = mean([r.base.mean for r in complete])
    new = mean([r.new.mean for r in complete])
    base_by_seed = per_seed_average([r.base for r in complete])
    new_by_seed = per_seed_average([r.new for r in complete])
    both = [s for s in base_by_seed if s in new_by_seed]
    expected = set().union(*(set(r.base.expected) | set(r.new.expected) for r in complete))
    return {"base": base, "new": new, "hm": harmonic_mean(base, new), "datasets": len(complete),
            "base_std": std_or_none([base_by_seed[s] for s in both]),
            "new_std": std_or_none([new_by_seed[s] for s in both]),
            "hm_std": std_or_none([harmonic_mean(base_by_seed[s], new_by_seed[s]) for s in both]),
            "seeds": len(both), "expected_seeds": len(expected), **warned, **at_init}


def build_base2new_table(key: tuple[str, str, str], by_dataset: dict[str, list[Run]]) -> Base2NewTable | None:
    rows = [build_base2new_row(name, by_dataset[name])
            for name in sorted(by_dataset, key=dataset_sort_key)
            if any(r.name in (BASE_RUN, NEW_RUN) for r in by_dataset[name])]
    if not rows:
        return None
    missing = [line for row in rows
               for line in missing_lines(f"{row.dataset} base", row.base) + missing_lines(f"{row.dataset} new", row.new)]
    logged = any(r.at_init is not None for runs in by_dataset.values() for r in runs)
    warnings = collect_warnings([r for runs in by_dataset.values() for r in runs if r.name in (BASE_RUN, NEW_RUN)])
    return Base2NewTable(*key, rows, base2new_average(rows), missing, logs_at_init=logged, warnings=warnings)


def build_transfer_table(protocol: str, key: tuple[str, str, str], source: str,
                         runs: list[Run]) -> TransferTable:
    expected = _seeds(runs)
    targets = sorted({r.name[len(TARGET_RUN_PREFIX):] for r in runs
                      if r.name.startswith(TARGET_RUN_PREFIX)}, key=dataset_sort_key)
    rows = [TransferRow(source, "source", summarize_runs(runs, SOURCE_RUN, expected),
                        summarize_initial(runs, SOURCE_RUN))]
    rows += [TransferRow(t, "target", summarize_runs(runs, TARGET_RUN_PREFIX + t, expected, trained_by=SOURCE_RUN))
             for t in targets]
    average = average_of([r.accuracy for r in rows[1:]])
    missing = [line for r in rows for line in missing_lines(f"{r.dataset} ({r.role})", r.accuracy)]
    return TransferTable(protocol, *key, source, rows, average["mean"], average["datasets"], average["std"],
                         average["seeds"], missing, average["expected_seeds"],
                         any(r.at_init is not None for r in runs), average["warned"], collect_warnings(runs))


def _shots_key(shots: str) -> tuple[int, str]:
    return (int(shots), shots) if shots.isdigit() else (sys.maxsize, shots)


def build_few_shot_table(key: tuple[str, str], runs: list[Run]) -> FewShotTable:
    """Datasets as rows, shots as columns; the Average row averages the datasets at each shots."""
    shots_values = sorted({r.shots for r in runs}, key=_shots_key)
    rows, missing = [], []
    for dataset in sorted({r.dataset for r in runs}, key=dataset_sort_key):
        accuracy, at_init = {}, {}
        for shots in shots_values:
            group = [r for r in runs if r.dataset == dataset and r.shots == shots]
            if group:
                accuracy[shots] = summarize_runs(group, FEW_SHOT_RUN, _seeds(group))
                at_init[shots] = summarize_initial(group, FEW_SHOT_RUN)
                missing += missing_lines(f"{dataset} {shots} shots", accuracy[shots])
        rows.append(FewShotRow(dataset, accuracy, at_init))
    average = {}
    for shots in shots_values:
        figures = average_of([row.accuracy[shots] for row in rows if shots in row.accuracy])
        initial = average_of([row.at_init[shots] for row in rows if shots in row.at_init])
        average[shots] = {**figures, "at_init": initial["mean"], "at_init_std": initial["std"],
                          "at_init_datasets": initial["datasets"], "at_init_seeds": initial["seeds"],
                          "at_init_expected_seeds": initial["expected_seeds"], "at_init_warned": initial["warned"]}
    return FewShotTable(*key, shots_values, rows, average, missing, logs_at_init=any(r.at_init is not None for r in runs),
                        warnings=collect_warnings(runs))


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
    for key in sorted(groups, key=lambda k: (k[0], k[1], _shots_key(k[2]))):
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


def reference_method_for(table) -> str:
    """The reference file's name of a table's method: the trainer's, or CLIP's for one that learns nothing."""
    return ZERO_SHOT_REFERENCE if getattr(table, "shots", None) == ZERO_SHOTS else table.trainer


def reference_protocols_for(protocol: str) -> list[str]:
    """A transfer tree of unknown name may match either published transfer table."""
    return [CROSS_DATASET, DOMAIN_GENERALIZATION] if protocol == TRANSFER else [protocol]


def reference_transfer_entry(reference: dict, protocol: str, method: str) -> dict | None:
    for name in reference_protocols_for(protocol):
        entry = reference.get(name, {}).get(method)
        if entry:
            return entry
    return None


def reference_base2new(reference: dict, method: str, dataset: str) -> dict | None:
    return reference.get(BASE2NEW, {}).get(method, {}).get(dataset)


def reference_methods(tables: list, reference: dict, requested: list[str] | None) -> list[str]:
    """The published methods to show: ``requested``, else those of the trainers found, and GOPro."""
    if requested is not None:
        return requested
    wanted = [reference_method_for(t) for t in tables] + ["GOPro"]
    return list(dict.fromkeys(wanted))


@dataclass
class Published:
    """One published method's figures over the columns of a comparison, and what could not be compared."""

    method: str
    cells: dict[str, dict[str, float | None]]  # column -> metric -> figure (None: not published)
    notes: list[str]


def published_base2new(reference: dict, method: str, datasets: list[str],
                        averaged: list[str] | None = None) -> Published:
    """Per dataset its published base/new/HM; with several datasets, the average recomputed over ``averaged``
    (default: all of them; the published average when they are all of its datasets), or none, with a note,
    when one of them has no published figure."""
    rows = reference.get(BASE2NEW, {}).get(method, {})
    averaged = datasets if averaged is None else averaged
    cells = {d: dict(rows.get(d) or {}) for d in datasets}
    lacking = [d for d in datasets if not rows.get(d)]
    notes = []
    if lacking:
        unaveraged = len(datasets) > 1 and set(lacking) & set(averaged)
        notes.append(f"{method} (published): no figure for {', '.join(lacking)} in the reference file"
                     + ("; so no average over the same datasets" if unaveraged else ""))
    if len(datasets) > 1:
        if set(lacking) & set(averaged) or not averaged:
            cells[AVERAGE] = {}
        elif set(averaged) == {d for d in rows if d not in ("source", "average")}:
            cells[AVERAGE] = dict(rows.get("average") or {})
        else:
            base = mean([rows[d]["base"] for d in averaged])
            new = mean([rows[d]["new"] for d in averaged])
            cells[AVERAGE] = {"base": base, "new": new, "hm": harmonic_mean(base, new)}
    return Published(method, cells, notes)


def commonly_averaged_targets(tables: list[TransferTable], targets: list[str]) -> list[str]:
    """The targets every table's target average covers when they all cover the same ones, else all of them."""
    covered = {tuple(r.dataset for r in t.rows if r.role == "target" and r.accuracy.mean is not None)
               for t in tables}
    return list(covered.pop()) if len(covered) == 1 else targets


def commonly_averaged(tables: list[Base2NewTable], datasets: list[str]) -> list[str]:
    """The datasets every table's average covers (those with base and new) when they all cover the same ones,
    else all of ``datasets``: the published average is taken over these."""
    covered = {tuple(r.dataset for r in t.rows if r.base.mean is not None and r.new.mean is not None)
               for t in tables}
    return list(covered.pop()) if len(covered) == 1 else datasets


def published_transfer(reference: dict, protocol: str, method: str, source: str, targets: list[str],
                       averaged: list[str] | None = None) -> Published:
    """The published source and target figures, and with several targets their average over ``averaged`` (default:
    all of them; the published average when they are all of its targets), or none, with a note."""
    averaged = targets if averaged is None else averaged
    entry = reference_transfer_entry(reference, protocol, method) or {}
    accuracy = entry.get("accuracy", {})
    if entry.get("source_dataset", source) != source:
        return Published(method, {}, [f"{method} (published) learned on {entry['source_dataset']}, not {source}: "
                                       "its figures are not comparable and are left out"])
    cells = {d: {"accuracy": accuracy.get(d)} for d in [source, *targets]}
    lacking = [d for d in [source, *targets] if accuracy.get(d) is None]
    notes = []
    if lacking:
        notes.append(f"{method} (published): no figure for {', '.join(lacking)} in the reference file"
                     + ("; so no average over the same targets" if len(targets) > 1 and set(lacking) & set(averaged)
                        else ""))
    if len(targets) > 1:
        present = [accuracy[t] for t in averaged if accuracy.get(t) is not None]
        all_targets = {d for d in accuracy if d != entry.get("source_dataset")}
        if not averaged or len(present) < len(averaged):
            figure = None
        elif set(averaged) == all_targets and entry.get("target_average") is not None:
            figure = entry["target_average"]
        else:
            figure = mean(present)
        cells[AVERAGE] = {"accuracy": figure}
    return Published(method, cells, notes)


def reference_notes(protocol: str, tables: list, reference: dict, methods: list[str], shown: list[Published],
                    columns: list[str]) -> list[str]:
    """What a reader must know to compare the published rows with the measured ones."""
    if not reference:
        return []
    names = reference_protocols_for(protocol)
    if not any(reference.get(name) for name in names):
        return [f"The reference file has no published {protocol} figures."]
    notes = [note for published in shown for note in published.notes]
    absent = [m for m in methods if not any(m in reference.get(name, {}) for name in names)]
    if absent:
        notes.append(f"No published {protocol} figures for {', '.join(absent)} in the reference file.")
    averaged = len(columns) > 1 and any(AVERAGE in p.cells and p.cells[AVERAGE] for p in shown)
    if averaged:
        what = "datasets" if protocol == BASE2NEW else "targets"
        named = f" ({', '.join(columns)})" if len(columns) <= 6 else ""
        notes.append(f"Published averages are over the same {len(columns)} {what}{named} as the measured ones, "
                     "recomputed from the published per-dataset figures (the papers' own averages are over "
                     "their full lists).")
    return notes


# ---------------------------------------------------------------------------- Markdown


AVERAGE = "average"


def fmt(value: float | None) -> str:
    return MISSING if value is None else f"{value:.2f}"


def fmt_mean_std(value: float | None, std: float | None, seeds: int = 2) -> str:
    """``mean ± std``; a figure from one seed (``seeds`` < 2) has no spread, so none is printed."""
    if value is None:
        return MISSING
    return f"{value:.2f}" + (f" ± {std:.2f}" if std is not None and seeds >= 2 else "")


def marked(text: str, warned: bool) -> str:
    """``text`` with the mark of a figure that includes a seed whose run logged a warning."""
    return f"{text} {WARNED_MARK}" if warned and text != MISSING else text


def fmt_stat(stat: Stat) -> str:
    return marked(fmt_mean_std(stat.mean, stat.std, stat.count), bool(stat.warned))


def seed_note(found: int, expected: int) -> str:
    """``n=3`` when every expected seed has a result, ``2/3`` when not."""
    return f"n={found}" if found == expected else f"{found}/{expected}"


def fmt_figure(value: float | None, std: float | None, found: int, expected: int, warned: bool = False) -> str:
    """A comparison cell: ``mean ± std (n=N)``, no spread for one seed, ``— (0/N)`` for none; ``†`` when
    ``warned``."""
    if value is None:
        return MISSING if not expected else f"{MISSING} (0/{expected})"
    return marked(f"{fmt_mean_std(value, std, found)} ({seed_note(found, expected)})", warned)


def fmt_stat_cell(stat: Stat | None) -> str:
    if stat is None:
        return MISSING
    return fmt_figure(stat.mean, stat.std, stat.count, len(stat.expected), bool(stat.warned))


def fmt_published_triple(row: dict | None) -> str:
    if not row:
        return MISSING
    return f"{fmt(row.get('base'))} / {fmt(row.get('new'))} / {fmt(row.get('hm'))}"


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def shots_label(shots: str) -> str:
    return "zero-shot" if shots == ZERO_SHOTS else plural(int(shots), "shot") if shots.isdigit() else shots


def _markdown_rows(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return lines


def missing_markdown(missing: list[str]) -> list[str]:
    """The seeds a table lacks, one bullet each, so that n/N < N/N never goes unexplained."""
    if not missing:
        return []
    return ["", "Seeds without a result:"] + [f"- {line}" for line in missing]


def notes_markdown(notes: list[str]) -> list[str]:
    return ["", *(f"Note: {note}" for note in notes)] if notes else []


def warning_lines(label: str, warnings: list[RunWarning], with_shots: bool = False) -> list[str]:
    """``label: dataset, seed S (runs): warning``, one line per distinct warning of a seed (no label: none)."""
    return [f"{f'{label}: ' if label else ''}{w.dataset}{f', {shots_label(w.shots)}' if with_shots else ''}, seed {w.seed} "
            f"({', '.join(w.runs)}): {w.warning}" for w in warnings]


def warnings_markdown(lines: list[str]) -> list[str]:
    """The warnings the table's runs logged, under a legend of the mark their figures carry."""
    if not lines:
        return []
    return ["", f"{WARNED_MARK} Warnings logged by the runs (each in its log.txt); a figure marked {WARNED_MARK} "
                "includes a seed whose run, or the training run it evaluates, logged one:"] + [f"- {line}" for line in lines]


def _coverage(count: int, total: int, noun: str) -> str:
    """``; 1 of 2 datasets`` when an average covers fewer columns than the table has."""
    return "" if count >= total else f"; {count} of {plural(total, noun)}"


def _average_cell(value, std, seeds, expected, count, total, noun, warned: bool = False) -> str:
    text = fmt_figure(value, std, seeds, expected)
    text = text if value is None or count >= total else f"{text[:-1]}{_coverage(count, total, noun)})"
    return marked(text, warned)


def base2new_comparison(tables: list[Base2NewTable], reference: dict, methods: list[str]) -> list[str]:
    """A row per trainer/configuration/shots and metric (base, new, HM; base at init where logged), a column per
    dataset and the average."""
    datasets = list(dict.fromkeys(d for d in sorted({r.dataset for t in tables for r in t.rows}, key=dataset_sort_key)))
    averaged = len(datasets) > 1
    with_init = any(t.logs_at_init for t in tables)
    header = ["Trainer", "Config", "Shots", "Metric", *datasets]
    if averaged:
        header.append(f"Average ({plural(len(datasets), 'dataset')})")
    metrics = [("base", "Base"), ("new", "New"), ("hm", "HM")] + ([("at_init", "Base at init")] if with_init else [])
    rows = []
    for table in tables:
        by_dataset = {row.dataset: row for row in table.rows}
        average = table.average
        for index, (metric, name) in enumerate(metrics):
            cells = [table.trainer, table.config, table.shots] if index == 0 else ["", "", ""]
            cells.append(name)
            for dataset in datasets:
                row = by_dataset.get(dataset)
                if row is None:
                    cells.append(MISSING)
                elif metric == "hm":
                    expected = len(set(row.base.expected) | set(row.new.expected))
                    cells.append(fmt_figure(row.hm, row.hm_std, row.hm_seeds, expected, bool(row.hm_warned)))
                else:
                    cells.append(fmt_stat_cell(getattr(row, metric)))
            if averaged:
                prefix = "at_init_" if metric == "at_init" else ""
                value = average[metric]
                std = average["at_init_std"] if metric == "at_init" else average[f"{metric}_std"]
                cells.append(_average_cell(value, std, average[f"{prefix}seeds"], average[f"{prefix}expected_seeds"],
                                           average[f"{prefix}datasets"], len(datasets), "dataset",
                                           average[f"{metric}_warned"]))
            rows.append(cells)
    common = commonly_averaged(tables, datasets)
    shown = [published_base2new(reference, m, datasets, common) for m in methods if m in reference.get(BASE2NEW, {})]
    for published in shown:
        for index, (metric, name) in enumerate(metrics[:3]):
            cells = [f"{published.method} (published)", "", ""] if index == 0 else ["", "", ""]
            cells += [name] + [fmt(published.cells[d].get(metric)) for d in datasets]
            if averaged:
                value = published.cells[AVERAGE].get(metric)
                partial = len(common) < len(datasets)
                cells.append(fmt(value) + (f" ({len(common)} of {plural(len(datasets), 'dataset')})"
                                           if partial and value is not None else ""))
            rows.append(cells)
    title = f"### {BASE2NEW}: every trainer and configuration"
    notes = reference_notes(BASE2NEW, tables, reference, methods, shown, common)
    missing = [f"{t.trainer} / {t.config}, {shots_label(t.shots)}: {line}" for t in tables for line in t.missing]
    warned = [line for t in tables for line in warning_lines(f"{t.trainer} / {t.config}, {shots_label(t.shots)}",
                                                              t.warnings)]
    return ([title, ""] + _markdown_rows(header, rows) + missing_markdown(missing) + warnings_markdown(warned)
            + notes_markdown(notes))


def transfer_comparison(tables: list[TransferTable], reference: dict, methods: list[str]) -> list[str]:
    """Per protocol and source: a row per trainer/configuration/shots, the source, each target and the target
    average as columns (the source's accuracy at init where logged)."""
    lines: list[str] = []
    for protocol, source in dict.fromkeys((t.protocol, t.source) for t in tables):
        group = [t for t in tables if (t.protocol, t.source) == (protocol, source)]
        targets = sorted({r.dataset for t in group for r in t.rows if r.role == "target"}, key=dataset_sort_key)
        averaged = len(targets) > 1
        with_init = any(t.logs_at_init for t in group)
        header = ["Trainer", "Config", "Shots", f"{source} (source)"]
        header += ["Source at init"] if with_init else []
        header += targets + ([f"Target average ({plural(len(targets), 'target')})"] if averaged else [])
        rows = []
        for table in group:
            by_dataset = {r.dataset: r for r in table.rows if r.role == "target"}
            cells = [table.trainer, table.config, table.shots, fmt_stat_cell(table.rows[0].accuracy)]
            cells += [fmt_stat_cell(table.rows[0].at_init)] if with_init else []
            cells += [fmt_stat_cell(by_dataset[t].accuracy) if t in by_dataset else MISSING for t in targets]
            if averaged:
                cells.append(_average_cell(table.target_average, table.target_average_std,
                                           table.target_average_seeds, table.target_average_expected,
                                           table.targets_averaged, len(targets), "target",
                                           table.target_average_warned))
            rows.append(cells)
        common = commonly_averaged_targets(group, targets)
        shown = [published_transfer(reference, protocol, m, source, targets, common) for m in methods
                 if reference_transfer_entry(reference, protocol, m)]
        for published in shown:
            if not published.cells:
                continue
            cells = [f"{published.method} (published)", "", "", fmt(published.cells[source]["accuracy"])]
            cells += [MISSING] if with_init else []
            cells += [fmt(published.cells[t]["accuracy"]) for t in targets]
            if averaged:
                value = published.cells[AVERAGE]["accuracy"]
                cells.append(fmt(value) + (f" ({len(common)} of {plural(len(targets), 'target')})"
                                           if value is not None and len(common) < len(targets) else ""))
            rows.append(cells)
        notes = reference_notes(protocol, group, reference, methods, shown, common)
        missing = [f"{t.trainer} / {t.config}, {shots_label(t.shots)}: {line}" for t in group for line in t.missing]
        warned = [line for t in group
                  for line in warning_lines(f"{t.trainer} / {t.config}, {shots_label(t.shots)}", t.warnings)]
        lines += ([""] if lines else []) + [f"### {protocol}: every trainer and configuration, source {source}", ""]
        lines += _markdown_rows(header, rows) + missing_markdown(missing) + warnings_markdown(warned)
        lines += notes_markdown(notes)
    return lines


def few_shot_comparison(tables: list[FewShotTable], reference: dict) -> list[str]:
    """A row per trainer/configuration and dataset (and their average), a column per number of shots; an
    "at init" row under each where the logs have the accuracy before training."""
    shots_values = sorted({s for t in tables for s in t.shots}, key=_shots_key)
    with_init = any(t.logs_at_init for t in tables)
    header = ["Trainer", "Config", "Dataset"] + (["Metric"] if with_init else []) + [shots_label(s) for s in shots_values]
    rows = []
    for table in tables:
        first = True
        entries: list[tuple[str, dict, dict | None]] = [(r.dataset, r.accuracy, r.at_init) for r in table.rows]
        for dataset, accuracy, at_init in entries:
            for metric, stats in [("accuracy", accuracy)] + ([("at init", at_init)] if with_init else []):
                cells = [table.trainer, table.config] if first else ["", ""]
                first = False
                cells += [dataset if metric == "accuracy" else ""] + ([metric] if with_init else [])
                cells += [fmt_stat_cell(stats[s]) if s in stats else "" for s in shots_values]
                rows.append(cells)
        if len(table.rows) > 1:
            for metric, prefix in [("accuracy", "")] + ([("at init", "at_init_")] if with_init else []):
                cells = ["", "", f"**Average** ({plural(len(table.rows), 'dataset')})" if not prefix else ""]
                cells += [metric] if with_init else []
                for s in shots_values:
                    a = table.average.get(s)
                    if a is None:
                        cells.append("")
                        continue
                    value = a["at_init"] if prefix else a["mean"]
                    std = a["at_init_std"] if prefix else a["std"]
                    cells.append(_average_cell(value, std, a[f"{prefix}seeds"], a[f"{prefix}expected_seeds"],
                                               a[f"{prefix}datasets"], len(table.rows), "dataset",
                                               a[f"{prefix}warned"]))
                rows.append(cells)
    notes = ["The reference file has no published few-shot figures."] if reference else []
    missing = [f"{t.trainer} / {t.config}: {line}" for t in tables for line in t.missing]
    warned = [line for t in tables for line in warning_lines(f"{t.trainer} / {t.config}", t.warnings, with_shots=True)]
    title = f"### {FEW_SHOT}: every trainer and configuration"
    return ([title, ""] + _markdown_rows(header, rows) + missing_markdown(missing) + warnings_markdown(warned)
            + notes_markdown(notes))


def base2new_markdown(table: Base2NewTable, reference: dict) -> list[str]:
    method = reference_method_for(table)
    with_reference = method in reference.get(BASE2NEW, {})
    with_init = table.logs_at_init
    header = ["Dataset", "Base", "New", "HM", "Seeds (base, new)"] + (["Base at init"] if with_init else [])
    if with_reference:
        header.append(f"Published {method} (B / N / HM)")
    rows = []
    for row in table.rows:
        cells = [row.dataset, fmt_stat(row.base), fmt_stat(row.new),
                 marked(fmt_mean_std(row.hm, row.hm_std, row.hm_seeds), bool(row.hm_warned)),
                 f"{row.base.seed_fraction}, {row.new.seed_fraction}"]
        cells += [fmt_stat_cell(row.at_init)] if with_init else []
        if with_reference:
            cells.append(fmt_published_triple(reference_base2new(reference, method, row.dataset)))
        rows.append(cells)
    average = table.average
    seeds = average.get("seeds", 0)
    cells = [f"**Average** ({plural(average['datasets'], 'dataset')})"]
    cells += [marked(fmt_mean_std(average[metric], average.get(f"{metric}_std"), seeds), average[f"{metric}_warned"])
              for metric in ("base", "new", "hm")]
    cells.append(plural(seeds, "common seed"))
    cells += [fmt_figure(average["at_init"], average["at_init_std"], average["at_init_seeds"],
                         average["at_init_expected_seeds"], average["at_init_warned"])] if with_init else []
    if with_reference:
        datasets = [row.dataset for row in table.rows if row.base.mean is not None and row.new.mean is not None]
        published = published_base2new(reference, method, datasets)
        cells.append(fmt_published_triple(published.cells.get(AVERAGE) if len(datasets) > 1
                                          else published.cells.get(datasets[0]) if datasets else None))
    rows.append(cells)
    title = f"### {BASE2NEW} — {table.trainer} / {table.config}, {shots_label(table.shots)}"
    return ([title, ""] + _markdown_rows(header, rows) + missing_markdown(table.missing)
            + warnings_markdown(warning_lines("", table.warnings)))


def transfer_markdown(table: TransferTable, reference: dict) -> list[str]:
    method = reference_method_for(table)
    targets = [r.dataset for r in table.rows if r.role == "target"]
    averaged = [r.dataset for r in table.rows if r.role == "target" and r.accuracy.mean is not None]
    published = published_transfer(reference, table.protocol, method, table.source, targets, averaged)
    with_reference = bool(reference_transfer_entry(reference, table.protocol, method)) and bool(published.cells)
    header = ["Dataset", "Role", "Accuracy", "Seeds"]
    if with_reference:
        header.append(f"Published {method}")
    rows = []
    for row in table.rows:
        accuracy = fmt_stat(row.accuracy)
        if table.logs_at_init and row.at_init is not None and row.at_init.count:
            accuracy += f" (at init {fmt_stat(row.at_init)})"
        cells = [row.dataset, row.role, accuracy, row.accuracy.seed_fraction]
        if with_reference:
            cells.append(fmt(published.cells[row.dataset]["accuracy"]))
        rows.append(cells)
    cells = [f"**Target average** ({plural(table.targets_averaged, 'target')})", "",
             marked(fmt_mean_std(table.target_average, table.target_average_std, table.target_average_seeds),
                    table.target_average_warned),
             plural(table.target_average_seeds, "common seed")]
    if with_reference:
        column = AVERAGE if len(targets) > 1 else targets[0] if targets else None
        cells.append(fmt(published.cells.get(column, {}).get("accuracy")))
    rows.append(cells)
    title = (f"### {table.protocol} — {table.trainer} / {table.config}, {shots_label(table.shots)}, "
             f"source {table.source}")
    return ([title, ""] + _markdown_rows(header, rows) + missing_markdown(table.missing)
            + warnings_markdown(warning_lines("", table.warnings)))


def few_shot_markdown(table: FewShotTable) -> list[str]:
    header = ["Dataset"] + [shots_label(k) for k in table.shots]
    rows = []
    for row in table.rows:
        cells = [row.dataset]
        for shots in table.shots:
            stat = row.accuracy.get(shots)
            cells.append(MISSING if stat is None else marked(f"{fmt_mean_std(stat.mean, stat.std, stat.count)} "
                                                             f"({stat.seed_fraction})", bool(stat.warned)))
        rows.append(cells)
    cells = ["**Average**"]
    for shots in table.shots:
        average = table.average[shots]
        cells.append(marked(f"{fmt_mean_std(average['mean'], average['std'], average['seeds'])} "
                            f"({plural(average['datasets'], 'dataset')}, {plural(average['seeds'], 'common seed')})",
                            average["warned"]))
    rows.append(cells)
    title = f"### {FEW_SHOT} — {table.trainer} / {table.config}"
    return ([title, ""] + _markdown_rows(header, rows) + missing_markdown(table.missing)
            + warnings_markdown(warning_lines("", table.warnings, with_shots=True)))


def render_markdown(tree: Path, tables: list, reference: dict, methods: list[str] | None = None,
                    detail: bool = False) -> str:
    """The comparison table of the tree's protocol and, with ``detail``, one table per trainer/configuration."""
    chosen = reference_methods(tables, reference, methods)
    lines = [f"# Results: {tree}", ""]
    base2new = [t for t in tables if isinstance(t, Base2NewTable)]
    transfer = [t for t in tables if isinstance(t, TransferTable)]
    few_shot = [t for t in tables if isinstance(t, FewShotTable)]
    for group, compare in ((base2new, lambda g: base2new_comparison(g, reference, chosen)),
                           (transfer, lambda g: transfer_comparison(g, reference, chosen)),
                           (few_shot, lambda g: few_shot_comparison(g, reference))):
        if group:
            lines += compare(group) + [""]
    if detail:
        lines += ["## Each trainer and configuration", ""]
        for table in tables:
            if isinstance(table, Base2NewTable):
                lines += base2new_markdown(table, reference)
            elif isinstance(table, TransferTable):
                lines += transfer_markdown(table, reference)
            else:
                lines += few_shot_markdown(table)
            lines.append("")
    lines.append("Accuracy: top-1 %, mean ± population std over seeds; (n=N): all N seeds with a folder have a "
                 "result, (n/N): n of them do; one seed has no spread. Averages: over datasets (targets), "
                 "± std of the per-seed averages over the n seeds common to every averaged dataset. "
                 f"{MISSING} = no finished run found.")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- JSON


def tables_as_json(tree: Path, tables: list, reference_path: Path | None) -> dict:
    return {
        "tree": str(tree),
        "reference": str(reference_path) if reference_path else None,
        "tables": [asdict(table) for table in tables],
    }


# ---------------------------------------------------------------------------- figure


def spread(std: float | None, seeds: int) -> float | None:
    """The error bar of a figure: its seed std, none for one seed (which has no spread)."""
    return std if seeds >= 2 else None


def method_labels(tables: list) -> list[str]:
    """A label per table: ``trainer / config``, with the shots where learned rows differ in shots; a trainer
    that learns nothing (0 shots) never carries a number of shots."""
    learned_shots = {t.shots for t in tables if isinstance(t.shots, str)} - {ZERO_SHOTS}
    with_shots = len(learned_shots) > 1
    labels = []
    for table in tables:
        label = f"{table.trainer} / {table.config}"
        shots = getattr(table, "shots", None)
        if with_shots and isinstance(shots, str) and shots != ZERO_SHOTS:
            label += f", {shots_label(shots)}"
        labels.append(label)
    return labels


def base2new_panels(tables: list[Base2NewTable], reference: dict, methods: list[str]):
    """A panel per dataset (and the average over several): a group of bars per method, base, new and HM, each
    with ± its seed std; published methods' bars hatched."""
    from tools.results_figures import BarPanel, BarSeries

    datasets = sorted({row.dataset for t in tables for row in t.rows}, key=dataset_sort_key)
    labels = method_labels(tables)
    common = commonly_averaged(tables, datasets)
    published = [published_base2new(reference, m, datasets, common) for m in methods
                 if m in reference.get(BASE2NEW, {})]
    columns = datasets + ([AVERAGE] if len(datasets) > 1 else [])
    panels = []
    for column in columns:
        series = {metric: BarSeries(name, [], [], []) for metric, name in (("base", "Base"), ("new", "New"),
                                                                           ("hm", "HM"))}
        for table in tables:
            row = next((r for r in table.rows if r.dataset == column), None)
            for metric, bars in series.items():
                if column == AVERAGE:
                    value, error, seeds = table.average[metric], table.average[f"{metric}_std"], table.average["seeds"]
                elif row is None:
                    value = error = None
                    seeds = 0
                elif metric == "hm":
                    value, error, seeds = row.hm, row.hm_std, row.hm_seeds
                else:
                    stat = getattr(row, metric)
                    value, error, seeds = stat.mean, stat.std, stat.count
                bars.values.append(value)
                bars.errors.append(spread(error, seeds))
                bars.hatched.append(False)
        for entry in published:
            for metric, bars in series.items():
                bars.values.append(entry.cells.get(column, {}).get(metric))
                bars.errors.append(None)
                bars.hatched.append(True)
        x_labels = labels + [f"{entry.method} (published)" for entry in published]
        title = f"average over {plural(len(common), 'dataset')}" if column == AVERAGE else column
        panels.append(BarPanel(f"{BASE2NEW}: {title}", x_labels, "method", list(series.values())))
    return panels


def transfer_panels(tables: list[TransferTable], reference: dict, methods: list[str]):
    """A panel per protocol and source: the source, each target and the target average (several targets), a bar
    per method with ± its seed std; published figures hatched."""
    from tools.results_figures import BarPanel, BarSeries

    panels = []
    for protocol, source in dict.fromkeys((t.protocol, t.source) for t in tables):
        group = [t for t in tables if (t.protocol, t.source) == (protocol, source)]
        targets = sorted({r.dataset for t in group for r in t.rows if r.role == "target"}, key=dataset_sort_key)
        columns = [source] + targets
        series = []
        for table, label in zip(group, method_labels(group)):
            by_dataset = {r.dataset: r.accuracy for r in table.rows}
            values = [by_dataset[d].mean if d in by_dataset else None for d in columns]
            errors = [spread(by_dataset[d].std, by_dataset[d].count) if d in by_dataset else None for d in columns]
            if len(targets) > 1:
                values.append(table.target_average)
                errors.append(spread(table.target_average_std, table.target_average_seeds))
            series.append(BarSeries(label, values, errors, [False] * len(values)))
        common = commonly_averaged_targets(group, targets)
        for method in methods:
            if not reference_transfer_entry(reference, protocol, method):
                continue
            entry = published_transfer(reference, protocol, method, source, targets, common)
            if not entry.cells:
                continue
            values = [entry.cells[d]["accuracy"] for d in columns]
            values += [entry.cells[AVERAGE]["accuracy"]] if len(targets) > 1 else []
            series.append(BarSeries(f"{method} (published)", values, [None] * len(values), [True] * len(values)))
        x_labels = [f"{source} (source)"] + targets + (["target average"] if len(targets) > 1 else [])
        panels.append(BarPanel(f"{protocol}: learned on {source}", x_labels, "dataset", series))
    return panels


def few_shot_panels(tables: list[FewShotTable]):
    """One panel per dataset, and the average over datasets when there are several; a line per table."""
    from tools.results_figures import LinePanel, LineSeries

    datasets = sorted({row.dataset for t in tables for row in t.rows}, key=dataset_sort_key)
    labels = method_labels(tables)
    panels = []
    for dataset in datasets:
        series = []
        for table, label in zip(tables, labels):
            row = next((r for r in table.rows if r.dataset == dataset), None)
            points = [(int(k), s.mean, s.std or 0.0) for k, s in (row.accuracy.items() if row else ())
                      if k.isdigit() and s.mean is not None]
            if points:
                series.append(LineSeries(label, *map(list, zip(*sorted(points)))))
        panels.append(LinePanel(f"{FEW_SHOT}: {dataset}", series))
    if len(datasets) > 1:
        series = []
        for table, label in zip(tables, labels):
            points = [(int(k), a["mean"], a["std"] or 0.0) for k, a in table.average.items()
                      if k.isdigit() and a["mean"] is not None]
            if points:
                series.append(LineSeries(label, *map(list, zip(*sorted(points)))))
        panels.append(LinePanel(f"{FEW_SHOT}: average over {plural(len(datasets), 'dataset')}", series))
    return panels


def figure_panels(tables: list, reference: dict, methods: list[str] | None) -> tuple[list, int]:
    """The panels of the tree's figure and how many go side by side."""
    chosen = reference_methods(tables, reference, methods)
    base2new = [t for t in tables if isinstance(t, Base2NewTable)]
    transfer = [t for t in tables if isinstance(t, TransferTable)]
    few_shot = [t for t in tables if isinstance(t, FewShotTable)]
    panels: list = []
    if base2new:
        panels += base2new_panels(base2new, reference, chosen)
    if transfer:
        panels += transfer_panels(transfer, reference, chosen)
    if few_shot:
        panels += few_shot_panels(few_shot)
    bars = max((len(p.x_labels) * len(p.series) for p in panels if hasattr(p, "x_labels")), default=0)
    return panels, 1 if bars > 24 else 2 if bars > 9 or not bars else 3


def plot_tables(tables: list, reference: dict, methods: list[str] | None, path: Path) -> list[Path]:
    """Draw the tree's figure; returns the files written (PNG and PDF)."""
    from tools.results_figures import draw_figure, save_figure

    panels, columns = figure_panels(tables, reference, methods)
    return save_figure(draw_figure(panels, columns), path)


# ---------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tree", type=Path, help="an output tree of one task, e.g. output/base2new")
    parser.add_argument("--detail", action="store_true",
                        help="also print one table per trainer/configuration (per-dataset seeds, published rows)")
    parser.add_argument("--reference", type=Path, default=None,
                        help="published rows to show beside the results, e.g. tools/reference_results.json")
    parser.add_argument("--reference-methods", default=None,
                        help="comma-separated methods of the reference file to show "
                             "(default: the trainers found, and GOPro)")
    parser.add_argument("--plot", type=Path, default=None,
                        help="PNG path (default: TREE/results.png); a PDF is written beside it")
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
              "<TRAINER>/<CONFIG>/<DATASET>/shots_<K>/seed<S>/<RUN>/log.txt with a '* accuracy:' line "
              "after '=> result' (written by scripts/train.sh and scripts/test.sh)", file=sys.stderr)
        return 1
    reference = load_reference(args.reference)
    methods = [m.strip() for m in args.reference_methods.split(",")] if args.reference_methods else None
    tables = build_tables(tree, runs)
    markdown = render_markdown(tree, tables, reference, methods, args.detail)
    print(markdown, end="")
    (tree / "results.md").write_text(markdown, encoding="utf-8")
    with open(tree / "results.json", "w", encoding="utf-8") as handle:
        # allow_nan=False: every figure was checked, so a NaN here would be a bug, never a table entry.
        json.dump(tables_as_json(tree, tables, args.reference), handle, indent=2, allow_nan=False)
    written = plot_tables(tables, reference, methods, args.plot or tree / "results.png")
    print(f"wrote {tree / 'results.md'}, {tree / 'results.json'}, {' and '.join(str(p) for p in written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
