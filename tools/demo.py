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
import json
import logging
import os
import os.path as osp
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from tqdm import tqdm

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)

from datasets.world import BASE_TO_NEW, DG_TARGETS, task_of  # noqa: E402
from datasets.world_gen import prepare_task  # noqa: E402

logger = logging.getLogger("demo")

SOURCE = "world"  # the ImageNet analogue: source of both transfer protocols
BASE2NEW, CROSS_DATASET, DOMAIN_GENERALIZATION, FEW_SHOT = (
    "base2new", "cross-dataset", "domain-generalization", "few-shot")
TASKS = (BASE2NEW, CROSS_DATASET, DOMAIN_GENERALIZATION, FEW_SHOT)
ZERO_SHOT = "ZeroshotCLIP"
CHECKPOINT = osp.join(REPO, "assets", "world_clip_vit.pt")


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
# make demo, sized for <= 10 minutes on 2 cores, where the fixed cost of each train.py process (imports, data,
# model: 5-10 s) outweighs the training itself: every protocol and trainer, but 4 shots instead of 16, base2new
# and few-shot on World only, few-shot at 1 and 4 shots, two targets per transfer protocol, one seed.
DEMO = Schedule(base2new=(SOURCE,), cross_targets=("world_textures", "world_digits"),
                dg_targets=("world_sketch", "world_cartoon"), few_shot=(SOURCE,), few_shot_shots="1 4",
                shots=4, seeds="1")


@dataclass(frozen=True)
class Step:
    """One protocol-script call: ``bash scripts/<script>.sh <dataset> <task>`` for one trainer."""

    script: str  # "train" or "test"
    trainer: str
    task: str
    dataset: str

    @property
    def label(self) -> str:
        return f"{self.task} {self.script} {self.trainer} {self.dataset}"


def trainer_chains(trainer: str, schedule: Schedule) -> list[list[Step]]:
    """The calls for one trainer as independent chains, each run in order.

    Cross-dataset and domain generalisation share a chain: both learn on SOURCE with the same arguments,
    so train.sh links the second source run to the finished first one instead of training again.
    """
    chains = [[Step(script, trainer, BASE2NEW, dataset) for script in ("train", "test")]
              for dataset in schedule.base2new]
    chains.append([Step(script, trainer, task, SOURCE)
                   for task in (CROSS_DATASET, DOMAIN_GENERALIZATION) for script in ("train", "test")])
    chains += [[Step("train", trainer, FEW_SHOT, dataset)] for dataset in schedule.few_shot]  # train tests
    return chains


def plan(trainers: tuple[str, ...], schedule: Schedule) -> list[list[Step]]:
    """Every call of the demo as independent chains, the longest first.

    Longest first (most calls; ZeroshotCLIP, which learns nothing, last among equals), so that short chains
    fill the other workers' time at the end instead of one long chain running alone.
    """
    chains = [chain for trainer in trainers for chain in trainer_chains(trainer, schedule)]
    return sorted(chains, key=lambda chain: (-len(chain), chain[0].trainer == ZERO_SHOT))


def datasets_of(schedule: Schedule) -> tuple[str, ...]:
    """Every world dataset the schedule touches, each once."""
    names = (*schedule.base2new, SOURCE, *schedule.cross_targets, *schedule.dg_targets, *schedule.few_shot)
    return tuple(dict.fromkeys(names))


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


def script_env(args: argparse.Namespace, step: Step, schedule: Schedule) -> dict[str, str]:
    """The environment the protocol scripts read (see ``bash scripts/train.sh`` usage)."""
    env = dict(os.environ)
    threads = str(max(1, (os.cpu_count() or 1) // args.jobs))
    targets = schedule.cross_targets if step.task == CROSS_DATASET else schedule.dg_targets
    env.update({
        "OMP_NUM_THREADS": threads,  # torch's intra-op pool; see the module docstring
        "MKL_NUM_THREADS": threads,
        "HF_HUB_OFFLINE": "1",
        "DATA": osp.abspath(args.data),
        "TRAINER": step.trainer,
        "CFG": args.cfg,
        "SEEDS": schedule.seeds,
        "SHOTS": schedule.few_shot_shots if step.task == FEW_SHOT else str(schedule.shots),
        "OUTPUT": osp.abspath(args.output),
        "OPTS": f"MODEL.BACKBONE.NAME {shlex.quote(osp.abspath(args.clip))} {args.opts}".strip(),
        "SOURCE": SOURCE,
        "TARGETS": " ".join(targets),
        "PYTHON": sys.executable,
    })
    return env


def run_step(step: Step, env: dict[str, str], log_path: str, bar: tqdm) -> None:
    """Run one protocol script, logging to ``log_path`` and showing its latest line on the bar.

    The one place that knows how a run is launched: swap this to call train.py directly if needed.
    """
    command = ["bash", osp.join(REPO, "scripts", f"{step.script}.sh"), step.dataset, step.task]
    tail: deque[str] = deque(maxlen=30)
    last_refresh = 0.0
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
    if code != 0:
        sys.stderr.write("\n".join(tail) + "\n")
        raise SystemExit(f"demo: '{step.label}' failed with exit code {code}; full log: {log_path}")


def print_results(output: str, heading: str) -> None:
    """Print the Markdown tables of each task and let tools/results.py write its plot."""
    for task in TASKS:
        tree = osp.join(osp.abspath(output), task)
        result = subprocess.run([sys.executable, osp.join(REPO, "tools", "results.py"), tree],
                                cwd=REPO, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"demo: tools/results.py {tree} failed:\n{result.stderr}")
        print(f"\n## {task} ({heading})\n")
        print(result.stdout.strip())
        print(f"\nplot: {osp.join(tree, 'results.png')}")


def fmt(mean: float | None, std: float | None = None) -> str:
    """``mean ± std`` (``—`` for no result; the std is left out where there is none)."""
    if mean is None:
        return "—"
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def base2new_summary(tables: list[dict]) -> list[str]:
    lines = ["| Trainer | Base | New | HM | datasets | seeds |", "|---|---|---|---|---|---|"]
    for t in tables:
        a = t["average"]
        lines.append(f"| {t['trainer']} | {fmt(a['base'], a.get('base_std'))} | {fmt(a['new'], a.get('new_std'))} | "
                     f"{fmt(a['hm'], a.get('hm_std'))} | {a.get('datasets', 0)} | {a.get('seeds', 0)} |")
    return lines


def transfer_summary(tables: list[dict]) -> list[str]:
    targets = list(dict.fromkeys(r["dataset"] for t in tables for r in t["rows"] if r["role"] == "target"))
    lines = ["| Trainer | " + " | ".join([f"{tables[0]['source']} (source)", *targets, "target avg", "seeds"]) + " |",
             "|---" * (len(targets) + 4) + "|"]
    for t in tables:
        accuracy = {r["dataset"]: r["accuracy"] for r in t["rows"]}
        cells = [accuracy.get(t["source"]), *(accuracy.get(d) for d in targets)]
        cells = [fmt(None) if a is None else fmt(a["mean"], a["std"]) for a in cells]
        cells += [fmt(t["target_average"], t.get("target_average_std")), str(t.get("target_average_seeds", 0))]
        lines.append(f"| {t['trainer']} | " + " | ".join(cells) + " |")
    return lines


def few_shot_summary(tables: list[dict]) -> list[str]:
    """Average over datasets at each number of shots (n = seeds); ZeroshotCLIP's one figure is its 0-shot column."""
    shots = sorted({s for t in tables for s in t["shots"]}, key=int)
    lines = ["| Trainer | " + " | ".join(f"{s} shots" for s in shots) + " |", "|---" * (len(shots) + 1) + "|"]
    for t in tables:
        cells = []
        for s in shots:
            a = t["average"].get(s)
            cells.append(fmt(None) if a is None else f"{fmt(a['mean'], a['std'])} (n={a['seeds']})")
        lines.append(f"| {t['trainer']} | " + " | ".join(cells) + " |")
    return lines


def summary(output: str) -> str:
    """One Markdown table per task with a row per trainer, from the results.json files results.py wrote."""
    lines: list[str] = []
    for task in TASKS:
        with open(osp.join(osp.abspath(output), task, "results.json")) as f:
            tables = json.load(f)["tables"]
        render = {BASE2NEW: base2new_summary, FEW_SHOT: few_shot_summary}.get(task, transfer_summary)
        lines += ([""] if lines else []) + [f"### {task}: all trainers (average, mean ± std over seeds)", ""]
        lines += render(tables)
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--full", action="store_true",
                   help="the README's numbers: every world dataset, 16 shots, few-shot 1-16, seeds 1 2 3 (hours)")
    p.add_argument("--output", default=None,
                   help="output tree (default: demo_output/demo, with --full demo_output/full)")
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
    return p.parse_args(argv)


def schedule_of(args: argparse.Namespace) -> Schedule:
    """``DEMO`` or ``FULL``, with ``--seeds`` and ``--shots`` applied."""
    schedule = FULL if args.full else DEMO
    if args.seeds is not None:
        schedule = replace(schedule, seeds=args.seeds)
    if args.shots is not None:
        schedule = replace(schedule, shots=args.shots)
    return schedule


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    if args.output is None:
        args.output = osp.join(REPO, "demo_output", "full" if args.full else "demo")
    if not osp.isfile(args.clip):
        raise SystemExit(f"demo: CLIP checkpoint {args.clip} not found; make it with tools/pretrain_world_clip.py "
                         "(see assets/README.md)")
    if args.jobs < 1:
        raise SystemExit(f"demo: --jobs is {args.jobs}; it must be >= 1")
    schedule = schedule_of(args)
    trainers = select_trainers(args.trainers, available_trainers(args.cfg), args.cfg)
    if args.fresh and osp.isdir(args.output):
        shutil.rmtree(args.output)
    os.makedirs(args.output, exist_ok=True)
    start = time.time()
    # Generated here once (and held shared), so parallel chains never race to write the same tree.
    for name in datasets_of(schedule):
        logger.info("World data: %s", prepare_task(osp.abspath(args.data), task_of(name)))
    log_dir = osp.join(args.output, "logs")
    os.makedirs(log_dir, exist_ok=True)
    chains = plan(trainers, schedule)
    failed = threading.Event()  # after a failure no chain starts another run

    def run_chain(chain: list[Step], bar: tqdm) -> None:
        first = chain[0]
        log_path = osp.join(log_dir, f"{first.task}_{first.dataset}_{first.trainer}.log")  # one per chain
        for step in chain:
            if failed.is_set():
                return
            try:
                run_step(step, script_env(args, step, schedule), log_path, bar)
            except BaseException:
                failed.set()
                raise
            bar.update(1)

    n_calls = sum(len(chain) for chain in chains)
    logger.info("demo: %d trainers (%s), %d script calls", len(trainers), ", ".join(trainers), n_calls)
    with tqdm(total=n_calls, desc=f"demo ({args.jobs} at once)", unit="call", dynamic_ncols=True) as bar:
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = [pool.submit(run_chain, chain, bar) for chain in chains]
        for future in futures:
            future.result()  # re-raises the first failure's SystemExit
    heading = (f"embedded world, {schedule.shots} shots (few-shot: {schedule.few_shot_shots}), "
               f"seeds {schedule.seeds}")
    print_results(args.output, heading)
    print(f"\n## Summary ({heading})\n")
    print(summary(args.output))
    print(f"\ndemo: {n_calls} script calls in {time.time() - start:.0f} s; logs: {log_dir}")


if __name__ == "__main__":
    main()
