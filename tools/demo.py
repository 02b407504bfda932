"""``make demo``: every protocol, every registered trainer, on the embedded world with the shipped small CLIP.

    HF_HUB_OFFLINE=1 .venv/bin/python tools/demo.py [--full] [--output DIR] [--fresh]

Runs base-to-new, cross-dataset (learn on ``world``, test on the other world datasets), domain
generalisation (learn on ``world``, test on ``world_sketch``, ``world_painting``, ``world_cartoon``) and
few-shot through ``scripts/train.sh`` and ``scripts/test.sh`` for every trainer registered in
``TRAINER_REGISTRY`` that has ``configs/trainers/<Name>/<cfg>.yaml``, then prints the tables of
``tools/results.py`` and writes its plots. The default is a reduced schedule sized for 2 cores (see
``DEMO``); ``--full`` runs the README's (``FULL``). Runs that already finished under ``--output`` are
reused, so an interrupted ``--full`` resumes where it stopped; ``--fresh`` starts over.

Each chain of calls (train, then test) is independent; ``--jobs`` chains run at once, each process on
``cpu_count // jobs`` threads. On 2 cores, 2 single-threaded runs beat 1 run on 2 threads: a 2-thread
run stalls whenever another process takes a core (measured on the world: about 0.2 s/step on 1 thread,
1.0-3.5 s/step on 2 threads next to a busy process).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import multiprocessing
import os
import os.path as osp
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, replace

from tqdm import tqdm

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)

from datasets.world import BASE_TO_NEW, DG_TARGETS, task_of  # noqa: E402
from datasets.world.gen import is_complete, prepare_task  # noqa: E402
from datasets.world.tasks import TASKS as WORLD_TASKS  # noqa: E402
from tools.warm_python import warm_python  # noqa: E402

logger = logging.getLogger("demo")

SOURCE = "world"  # the ImageNet analogue: source of both transfer protocols
BASE2NEW, CROSS_DATASET, DOMAIN_GENERALIZATION, FEW_SHOT = (
    "base2new", "cross-dataset", "domain-generalization", "few-shot")
TASKS = (BASE2NEW, CROSS_DATASET, DOMAIN_GENERALIZATION, FEW_SHOT)
CHECKPOINT = osp.join(REPO, "assets", "world_clip_vit.pt")
PRECISIONS = ("fp32", "bf16", "auto")  # --prec: TRAINER.<node>.PREC of every trainer
DEFAULT_PRECISION = "fp32"  # the world configs' and the README's
# Imported once by the fork server that starts each train.py / run_config.py process (tools/warm_python.py):
# about 5 s of CPU per process otherwise, most of a demo run's cost.
WARM_MODULES = ("torch", "torchvision", "open_clip", "datasets", "trainers", "dassl.engine.launch")


@dataclass(frozen=True)
class Schedule:
    """What the demo runs: the datasets of each protocol, the shots and the seeds."""

    base2new: tuple[str, ...]  # datasets, each trained on its base classes and tested on its new ones
    cross_targets: tuple[str, ...]  # cross-dataset: SOURCE's model tested on these
    dg_targets: tuple[str, ...]  # domain generalisation: SOURCE's model tested on these
    few_shot: tuple[str, ...]  # datasets of the few-shot protocol
    few_shot_shots: str  # its SHOTS list
    shots: int  # shots per class of base2new and the transfer protocols
    seeds: str


# The README's numbers: every world dataset, 16 shots, CoOp's 1-16 shot curve, 3 seeds.
FULL = Schedule(base2new=BASE_TO_NEW, cross_targets=tuple(d for d in BASE_TO_NEW if d != SOURCE),
                dg_targets=DG_TARGETS, few_shot=BASE_TO_NEW, few_shot_shots="1 2 4 8 16", shots=16, seeds="1 2 3")
# make demo, sized for <= 10 minutes on 2 cores: every protocol and trainer, but 4 shots instead of 16, one seed,
# base2new on WorldShades only (at 4 shots it shows what base-to-new shows on the real benchmarks: learned
# prompts gain on base, CoOp loses on new; on World, the cross-dataset and DG source, the features are the
# ceiling and every method ends near zero-shot), one cross-dataset target (WorldTextures) and one DG target
# (WorldSketch), few-shot at 1 and 4 shots on WorldTextures (10 classes). The world configs' schedule (5 epochs,
# batch 4) is unchanged. What is left is mostly evaluation (each run tests 1,000-2,400 images; 2-13 ms each on
# one core, CoCoOp and GOPro the slowest) and few-shot training on all classes, so few-shot runs on a 10-class dataset rather than World's 24
# (measured: about 40 % less CPU there). Measured on a quiet machine (2026-12-02): with two targets per transfer
# protocol the demo took 656 s of wall time, 35 % of its script time testing the transfer targets.
DEMO = Schedule(base2new=("world_shades",), cross_targets=("world_textures",),
                dg_targets=("world_sketch",), few_shot=("world_textures",), few_shot_shots="1 4",
                shots=4, seeds="1")


@dataclass(frozen=True)
class Step:
    """One protocol-script call: ``bash scripts/<script>.sh <dataset> <task>`` for one trainer."""

    script: str  # "train" or "test"
    trainer: str
    task: str
    dataset: str
    shots: str = ""  # SHOTS of this call when not the schedule's (few-shot: one call per number of shots)

    @property
    def label(self) -> str:
        return f"{self.task} {self.script} {self.trainer} {self.dataset}" + (f" {self.shots}" if self.shots else "")


def eval_only_trainers(trainers: tuple[str, ...]) -> frozenset[str]:
    """The trainers among ``trainers`` whose class learns nothing (``EVAL_ONLY``, as ZeroshotCLIP does)."""
    import trainers as _registered  # noqa: F401  (registers every trainer)
    from dassl.engine import TRAINER_REGISTRY

    return frozenset(name for name in trainers if getattr(TRAINER_REGISTRY.get(name), "EVAL_ONLY", False))


def trainer_chains(trainer: str, schedule: Schedule, tasks: tuple[str, ...] = TASKS,
                   eval_only: bool = False) -> list[list[Step]]:
    """The calls of ``tasks`` for one trainer as independent chains, each run in order.

    Cross-dataset and domain generalisation share a chain: both learn on SOURCE with the same arguments,
    so train.sh links the second source run to the finished first one instead of training again. Few-shot
    is a call per number of shots, so that they run in parallel; an ``eval_only`` trainer such as ZeroshotCLIP, which
    train.sh evaluates once (as 0 shots) whatever SHOTS is, gets one call.
    """
    chains = []
    if BASE2NEW in tasks:
        chains += [[Step(script, trainer, BASE2NEW, dataset) for script in ("train", "test")]
                   for dataset in schedule.base2new]
    transfer = [task for task in (CROSS_DATASET, DOMAIN_GENERALIZATION) if task in tasks]
    if transfer:
        chains.append([Step(script, trainer, task, SOURCE) for task in transfer for script in ("train", "test")])
    if FEW_SHOT in tasks:
        shots = [schedule.few_shot_shots] if eval_only else schedule.few_shot_shots.split()
        chains += [[Step("train", trainer, FEW_SHOT, dataset, k)]  # train.sh's final test is the result
                   for dataset in schedule.few_shot for k in shots]
    return chains


# The order chains start in, heaviest first: a transfer chain trains on SOURCE and tests every target, a
# few-shot call trains on all classes (more shots: longer), base2new trains and tests on half of them.
START_ORDER = {CROSS_DATASET: 0, DOMAIN_GENERALIZATION: 0, FEW_SHOT: 1, BASE2NEW: 2}


def plan(trainers: tuple[str, ...], schedule: Schedule, tasks: tuple[str, ...] = TASKS) -> list[list[Step]]:
    """Every call of the demo as independent chains, the heaviest first (``START_ORDER``).

    Heaviest first (and a trainer that learns nothing, ZeroshotCLIP, last among equals), so that the light
    chains fill the other workers' time at the end instead of one long chain running alone.
    """
    eval_only = eval_only_trainers(trainers)

    def weight(chain: list[Step]) -> tuple:
        most_shots = max((int(k) for k in chain[0].shots.split()), default=0)
        return START_ORDER[chain[0].task], -most_shots, chain[0].trainer in eval_only

    chains = [chain for trainer in trainers
              for chain in trainer_chains(trainer, schedule, tasks, trainer in eval_only)]
    return sorted(chains, key=weight)


def datasets_of(schedule: Schedule, tasks: tuple[str, ...] = TASKS) -> tuple[str, ...]:
    """Every world dataset the schedule's ``tasks`` touch, each once."""
    names = [*(schedule.base2new if BASE2NEW in tasks else ())]
    names += [SOURCE] * any(task in tasks for task in (CROSS_DATASET, DOMAIN_GENERALIZATION))
    names += [*(schedule.cross_targets if CROSS_DATASET in tasks else ())]
    names += [*(schedule.dg_targets if DOMAIN_GENERALIZATION in tasks else ())]
    names += [*(schedule.few_shot if FEW_SHOT in tasks else ())]
    return tuple(dict.fromkeys(names))


def select_tasks(requested: str | None) -> tuple[str, ...]:
    """``--tasks`` (comma-separated) checked against TASKS, in TASKS order; all of them when not given."""
    if requested is None:
        return TASKS
    chosen = {t.strip() for t in requested.split(",") if t.strip()}
    unknown = sorted(chosen - set(TASKS))
    if not chosen or unknown:
        what = "is empty" if not chosen else f"{requested!r}: {', '.join(unknown)} is not a task"
        raise SystemExit(f"demo: --tasks {what}; valid: {', '.join(TASKS)} (comma-separated)")
    return tuple(task for task in TASKS if task in chosen)


def check_precision_option(prec: str) -> str:
    if prec not in PRECISIONS:
        raise SystemExit(f"demo: --prec {prec!r} is not valid; valid: {', '.join(PRECISIONS)}")
    return prec


def precision_keys(trainers: tuple[str, ...]) -> dict[str, str]:
    """Each trainer's own precision key, ``TRAINER.<node>.PREC`` (the engine reads that node's PREC).

    A trainer whose node has no PREC key would not take ``--prec``, so the demo refuses to start.
    """
    from dassl.config import get_cfg_default
    from dassl.engine import trainer_config_node

    defaults = get_cfg_default()  # every registered trainer's keys (available_trainers imported them)
    keys = {}
    for trainer in trainers:
        node = trainer_config_node(trainer)
        if node not in defaults.TRAINER or "PREC" not in defaults.TRAINER[node]:
            raise SystemExit(f"demo: --prec: {trainer} has no TRAINER.{node}.PREC key, so its precision cannot "
                             "be set; leave it out with --trainers")
        keys[trainer] = f"TRAINER.{node}.PREC"
    return keys


def precision_label(prec: str) -> str:
    """``prec`` for the headings; for ``auto``, what it runs as on this machine."""
    if prec != "auto":
        return prec
    import torch

    from dassl.engine.precision import choose_precision

    resolved, _ = choose_precision(prec, "cuda" if torch.cuda.is_available() else "cpu")
    return f"auto (runs as {resolved} here)"


def default_output(full: bool, prec: str) -> str:
    """demo_output/demo or demo_output/full, with a ``_<prec>`` suffix unless fp32: precisions never mix."""
    name = "full" if full else "demo"
    return osp.join(REPO, "demo_output", name if prec == DEFAULT_PRECISION else f"{name}_{prec}")


def available_trainers(cfg: str) -> tuple[str, ...]:
    """Every registered trainer with a ``configs/trainers/<Name>/<cfg>.yaml``, in registration order."""
    import trainers  # noqa: F401  (registers every trainer)
    from dassl.engine import TRAINER_REGISTRY

    return tuple(name for name in TRAINER_REGISTRY.registered_names()
                 if osp.isfile(osp.join(REPO, "configs", "trainers", name, f"{cfg}.yaml")))


def select_trainers(requested: str | None, available: tuple[str, ...], cfg: str) -> tuple[str, ...]:
    """``--trainers`` (comma-separated) checked against ``available``; all of them when not given."""
    if requested is None:
        return available
    chosen = tuple(dict.fromkeys(t.strip() for t in requested.split(",") if t.strip()))
    unknown = [t for t in chosen if t not in available]
    if not chosen:
        raise SystemExit(f"demo: --trainers is empty; valid: {', '.join(available)}")
    if unknown:
        raise SystemExit(f"demo: --trainers {requested!r}: {', '.join(unknown)} is not a registered trainer "
                         f"with a '{cfg}' config (configs/trainers/<Name>/{cfg}.yaml); valid: {', '.join(available)}")
    return chosen


def prepare_data(root: str, names: tuple[str, ...], workers: int) -> list[str]:
    """Generate the world datasets ``names`` under ``root`` where missing, ``workers`` at once (largest first),
    and hold a shared lock on each while this process lives; returns their folders.

    Done once here, so that the runs never wait for one another to write a tree, and no other process can
    regenerate one during the demo. A fresh clone's five demo datasets take about 50 s on one core.
    """
    missing = sorted((task_of(name) for name in names if not is_complete(root, task_of(name))),
                     key=lambda key: -len(WORLD_TASKS[key].classes))
    if workers > 1 and len(missing) > 1:
        # Forked: this process has no other thread yet (the chains and the fork server start after this).
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            list(pool.map(prepare_task, [root] * len(missing), missing))
    return [prepare_task(root, task_of(name)) for name in names]


def process_env(args: argparse.Namespace, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every process the demo starts: ``environ`` (default ``os.environ``) with thread
    counts and the offline hub."""
    threads = str(max(1, (os.cpu_count() or 1) // args.jobs))
    return {
        **(os.environ if environ is None else environ),
        "OMP_NUM_THREADS": threads,  # torch's intra-op pool; see the module docstring
        "MKL_NUM_THREADS": threads,
        "HF_HUB_OFFLINE": "1",
    }


def script_env(args: argparse.Namespace, step: Step, schedule: Schedule, python: str = sys.executable,
               precision_key: str = "", environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment the protocol scripts read (see ``bash scripts/train.sh`` usage).

    ``precision_key`` is the trainer's ``TRAINER.<node>.PREC``, set to ``--prec`` (see ``precision_keys``);
    ``environ``: see ``process_env``.
    """
    targets = schedule.cross_targets if step.task == CROSS_DATASET else schedule.dg_targets
    opts = [f"{precision_key} {args.prec}"] if precision_key else []
    return {
        **process_env(args, environ),
        "DATA": osp.abspath(args.data),
        "TRAINER": step.trainer,
        "CFG": args.cfg,
        # The world configs' own backbone by default, so the runs' folder is named after CFG alone.
        "BACKBONE": osp.abspath(args.clip),
        "SEEDS": schedule.seeds,
        "SHOTS": step.shots or (schedule.few_shot_shots if step.task == FEW_SHOT else str(schedule.shots)),
        "OUTPUT": osp.abspath(args.output),
        "OPTS": " ".join([*opts, args.opts]).strip(),  # the user's --opts last, so they win
        "SOURCE": SOURCE,
        "TARGETS": " ".join(targets),
        "PYTHON": python,
    }


def run_step(step: Step, env: dict[str, str], log_path: str, bar: tqdm) -> float:
    """Run one protocol script, logging to ``log_path`` and showing its latest line on the bar; returns
    its wall time in seconds.

    The one place that knows how a run is launched: swap this to call train.py directly if needed.
    """
    command = ["bash", osp.join(REPO, "scripts", f"{step.script}.sh"), step.dataset, step.task]
    tail: deque[str] = deque(maxlen=30)
    last_refresh = 0.0
    start = time.monotonic()
    with open(log_path, "a") as log:
        log.write(f"$ {' '.join(command)}  # TRAINER={env['TRAINER']} SHOTS={env['SHOTS']}\n")
        process = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, bufsize=1)
        for line in process.stdout:
            log.write(line)
            tail.append(line.rstrip())
            if line.strip():
                # Redraw at most once a second: a redraw per log line floods non-terminal output.
                now = time.monotonic()
                refresh = now - last_refresh >= 1.0
                last_refresh = now if refresh else last_refresh
                bar.set_postfix_str(f"{step.trainer} {step.task}: {line.strip()}"[:80], refresh=refresh)
        code = process.wait()
        seconds = time.monotonic() - start
        log.write(f"# {seconds:.1f} s, exit code {code}\n")
    if code != 0:
        sys.stderr.write("\n".join(tail) + "\n")
        raise SystemExit(f"demo: '{step.label}' failed with exit code {code}; full log: {log_path}")
    return seconds


def print_results(output: str, heading: str, tasks: tuple[str, ...] = TASKS) -> None:
    """Print the Markdown tables of each task and let tools/results.py write its plot.

    results.py runs in this process (its ``main``), so matplotlib is imported once, not once per task.
    """
    from tools import results

    for task in tasks:
        tree = osp.join(osp.abspath(output), task)
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = results.main([tree])
        if code != 0:
            raise SystemExit(f"demo: tools/results.py {tree} failed:\n{stderr.getvalue()}")
        sys.stderr.write(stderr.getvalue())  # its warnings (e.g. a log without a valid result)
        print(f"\n## {task} ({heading})\n")
        print(stdout.getvalue().strip())
        print(f"\nfigure: {osp.join(tree, 'results.png')} (and results.pdf)")


def _labels(tables: list[dict]) -> list[str]:
    """The trainer of each table, with its configuration where the tables have several."""
    several = len({t["config"] for t in tables}) > 1
    return [f"{t['trainer']} / {t['config']}" if several else t["trainer"] for t in tables]


def _figure(average: dict, prefix: str, value_key: str, std_key: str) -> str:
    """A summary cell from results.json's average dict: mean ± std (n=N), no spread for one seed."""
    from tools.results import fmt_figure

    seeds = average.get(f"{prefix}seeds", 0)
    return fmt_figure(average.get(value_key), average.get(std_key), seeds, average.get(f"{prefix}expected_seeds", seeds))


def _stat(stat: dict | None) -> str:
    from tools.results import MISSING, fmt_figure

    if not stat:
        return MISSING
    return fmt_figure(stat["mean"], stat["std"], len(stat["seeds"]), len(stat["expected"]))


def base2new_summary(tables: list[dict]) -> list[str]:
    lines = ["| Trainer | Base | New | HM | Base at init | datasets |", "|---|---|---|---|---|---|"]
    for t, label in zip(tables, _labels(tables)):
        a = t["average"]
        cells = [_figure(a, "", metric, f"{metric}_std") for metric in ("base", "new", "hm")]
        cells += [_figure(a, "at_init_", "at_init", "at_init_std"), str(a.get("datasets", 0))]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def transfer_summary(tables: list[dict]) -> list[str]:
    targets = list(dict.fromkeys(r["dataset"] for t in tables for r in t["rows"] if r["role"] == "target"))
    source = tables[0]["source"]
    lines = ["| Trainer | " + " | ".join([f"{source} (source)", "source at init", *targets, "target avg"]) + " |",
             "|---" * (len(targets) + 4) + "|"]
    for t, label in zip(tables, _labels(tables)):
        rows = {r["dataset"]: r for r in t["rows"]}
        source_row = rows.get(t["source"]) or {}
        cells = [_stat(source_row.get("accuracy")), _stat(source_row.get("at_init"))]
        cells += [_stat(rows[d]["accuracy"]) if d in rows else _stat(None) for d in targets]
        seeds = t.get("target_average_seeds", 0)
        average = {"mean": t["target_average"], "std": t.get("target_average_std"), "seeds": seeds,
                   "expected_seeds": t.get("target_average_expected", seeds)}
        cells.append(_figure(average, "", "mean", "std"))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def few_shot_summary(tables: list[dict]) -> list[str]:
    """Average over datasets at each number of shots; a trainer that learns nothing has its one figure under
    zero-shot. "at init": the accuracy before training, averaged over the shots that logged it."""
    from tools.results import MISSING, shots_label

    shots = sorted({s for t in tables for s in t["shots"]}, key=int)
    lines = ["| Trainer | " + " | ".join([*(shots_label(s) for s in shots), "at init"]) + " |",
             "|---" * (len(shots) + 2) + "|"]
    for t, label in zip(tables, _labels(tables)):
        cells = [_figure(t["average"][s], "", "mean", "std") if s in t["average"] else MISSING for s in shots]
        initial = [a["at_init"] for a in t["average"].values() if a.get("at_init") is not None]
        cells.append(f"{sum(initial) / len(initial):.2f}" if initial else MISSING)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def summary(output: str, tasks: tuple[str, ...] = TASKS) -> str:
    """One Markdown table per task with a row per trainer, from the results.json files results.py wrote."""
    lines: list[str] = []
    for task in tasks:
        with open(osp.join(osp.abspath(output), task, "results.json")) as f:
            tables = json.load(f)["tables"]
        render = {BASE2NEW: base2new_summary, FEW_SHOT: few_shot_summary}.get(task, transfer_summary)
        lines += ([""] if lines else []) + [f"### {task}: all trainers (average over datasets, mean ± std over "
                                            "seeds (n))", ""]
        lines += render(tables)
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--full", action="store_true",
                   help="the README's numbers: every world dataset, 16 shots, few-shot 1-16, seeds 1 2 3 (hours)")
    p.add_argument("--tasks", default=None,
                   help=f"comma-separated protocols to run (default: all: {','.join(TASKS)})")
    p.add_argument("--prec", default=DEFAULT_PRECISION,
                   help=f"precision of every trainer, TRAINER.<node>.PREC: {', '.join(PRECISIONS)} "
                        f"(default {DEFAULT_PRECISION}, the world configs')")
    p.add_argument("--output", default=None,
                   help="output tree (default: demo_output/demo, with --full demo_output/full; "
                        "with --prec bf16 or auto, demo_output/demo_bf16, demo_output/full_auto, ...)")
    p.add_argument("--data", default=osp.join(REPO, "data"), help="data root; the world goes to DATA/world")
    p.add_argument("--clip", default=CHECKPOINT, help="CLIP checkpoint (default: the shipped small CLIP)")
    p.add_argument("--cfg", default="world", help="trainer config name under configs/trainers/<T>/")
    p.add_argument("--seeds", default=None, help='space-separated seeds, e.g. "1 2 3" (default: the schedule\'s)')
    p.add_argument("--shots", type=int, default=None,
                   help="shots per class of base2new and the transfer protocols (default: 4, with --full 16)")
    p.add_argument("--trainers", default=None,
                   help="comma-separated trainers (default: every registered trainer with a --cfg config)")
    p.add_argument("--opts", default="", help="extra KEY VALUE overrides for train.py")
    p.add_argument("--fresh", action="store_true", help="delete --output first instead of reusing finished runs")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="runs at once (default: 2, or 1 on one core)")
    p.add_argument("--fresh-interpreters", action="store_true",
                   help="start every train.py / run_config.py in a new interpreter instead of forking it from "
                        "one that imported torch once (tools/warm_python.py); slower, same results")
    args = p.parse_args(argv)
    args.prec = check_precision_option(args.prec)
    if args.output is None:
        args.output = default_output(args.full, args.prec)
    return args


def schedule_of(args: argparse.Namespace) -> Schedule:
    """``DEMO`` or ``FULL``, with ``--seeds`` and ``--shots`` applied."""
    schedule = FULL if args.full else DEMO
    if args.seeds is not None:
        schedule = replace(schedule, seeds=args.seeds)
    if args.shots is not None:
        schedule = replace(schedule, shots=args.shots)
    return schedule


def heading_of(schedule: Schedule, prec: str) -> str:
    return (f"embedded world, {schedule.shots} shots (few-shot: {schedule.few_shot_shots}), "
            f"seeds {schedule.seeds}, precision {precision_label(prec)}")


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    if not osp.isfile(args.clip):
        raise SystemExit(f"demo: CLIP checkpoint {args.clip} not found; make it with tools/pretrain_world_clip.py "
                         "(see assets/README.md)")
    if args.jobs < 1:
        raise SystemExit(f"demo: --jobs is {args.jobs}; it must be >= 1")
    tasks = select_tasks(args.tasks)
    schedule = schedule_of(args)
    trainers = select_trainers(args.trainers, available_trainers(args.cfg), args.cfg)
    prec_keys = precision_keys(trainers)
    # The environment of every process, taken once: imports in this process set variables (generating the digits
    # imports scikit-learn, which sets KMP_*), and the fork server compares its own with each call's.
    environ = dict(os.environ)
    if args.fresh and osp.isdir(args.output):
        shutil.rmtree(args.output)
    log_dir = osp.join(args.output, "logs")
    os.makedirs(log_dir, exist_ok=True)
    start = time.time()
    chains = plan(trainers, schedule, tasks)
    failed = threading.Event()  # after a failure no chain starts another run
    timings: list[tuple[str, float]] = []

    def run_chain(chain: list[Step], bar: tqdm, python: str) -> None:
        first = chain[0]
        log_path = osp.join(log_dir, f"{first.task}_{first.dataset}_{first.trainer}.log")  # one per chain
        for step in chain:
            if failed.is_set():
                return
            env = script_env(args, step, schedule, python, prec_keys[step.trainer], environ)
            try:
                timings.append((step.label, run_step(step, env, log_path, bar)))
            except BaseException:
                failed.set()
                raise
            bar.update(1)

    n_calls = sum(len(chain) for chain in chains)
    logger.info("demo: %d trainers (%s), %s, %d script calls", len(trainers), ", ".join(trainers),
                ", ".join(tasks), n_calls)
    for folder in prepare_data(osp.abspath(args.data), datasets_of(schedule, tasks), args.jobs):
        logger.info("World data: %s", folder)
    with contextlib.ExitStack() as stack:
        python = sys.executable
        if not args.fresh_interpreters:
            python = stack.enter_context(warm_python(list(WARM_MODULES), process_env(args, environ),
                                                     log=osp.join(log_dir, "processes.tsv")))
        with tqdm(total=n_calls, desc=f"demo ({args.jobs} at once)", unit="call", dynamic_ncols=True) as bar:
            with ThreadPoolExecutor(max_workers=args.jobs) as pool:
                futures = [pool.submit(run_chain, chain, bar, python) for chain in chains]
            for future in futures:
                future.result()  # re-raises the first failure's SystemExit
    with open(osp.join(log_dir, "timings.tsv"), "w") as f:
        f.writelines(f"{label}\t{seconds:.1f}\n" for label, seconds in timings)
    heading = heading_of(schedule, args.prec)
    print_results(args.output, heading, tasks)
    print(f"\n## Summary ({heading})\n")
    print(summary(args.output, tasks))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\ndemo: {n_calls} script calls in {time.time() - start:.0f} s (load average 1/5/15 min now: {load}); "
          f"logs and per-call times (timings.tsv): {log_dir}")


if __name__ == "__main__":
    main()
