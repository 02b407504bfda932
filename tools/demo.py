"""``make demo``: every protocol, every trainer, on the embedded world with the shipped small CLIP.

    HF_HUB_OFFLINE=1 .venv/bin/python tools/demo.py [--output demo_output] [--fresh]

Runs base-to-new (ZeroshotCLIP, CoOp, CoCoOp, GOPro) and domain generalisation (learn on the
photo domain ``world``, test on ``world_sketch``, ``world_painting``, ``world_cartoon``) through
``scripts/train.sh`` and ``scripts/test.sh``, then prints the tables of ``tools/results.py`` and
writes its plots. Runs that already finished under ``--output`` are reused; ``--fresh`` starts over.

Each (trainer, task) pair is an independent chain (train, then test); ``--jobs`` chains run at once, each
process on ``cpu_count // jobs`` threads. On 2 cores, 2 single-threaded runs beat 1 run on 2 threads:
a 2-thread run stalls whenever another process takes a core (measured on the world: about 0.2 s/step
on 1 thread, 1.0-3.5 s/step on 2 threads next to a busy process).
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
from dataclasses import dataclass

from tqdm import tqdm

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)

from datasets.world import task_of  # noqa: E402
from datasets.world_gen import prepare_task  # noqa: E402

logger = logging.getLogger("demo")

TRAINERS = ("ZeroshotCLIP", "CoOp", "CoCoOp", "GOPro")
SOURCE = "world"
TARGETS = ("world_sketch", "world_painting", "world_cartoon")
TASKS = ("base2new", "domain-generalization")
CHECKPOINT = osp.join(REPO, "assets", "world_clip_vit.pt")


@dataclass(frozen=True)
class Step:
    """One protocol-script call: ``bash scripts/<script>.sh <dataset> <task>`` for one trainer."""

    script: str  # "train" or "test"
    trainer: str
    task: str

    @property
    def label(self) -> str:
        return f"{self.task} {self.script} {self.trainer}"


def plan(trainers: tuple[str, ...]) -> list[list[Step]]:
    """Every call of the demo as independent chains (train, then test), the longest first.

    Trainers are listed cheapest first, so reversing puts GOPro's chains (the slowest) at the front and a
    short chain fills the other worker's time at the end instead of one long chain running alone.
    """
    chains = [[Step(script, trainer, task) for script in ("train", "test")] for trainer in trainers for task in TASKS]
    return chains[::-1]


def script_env(args: argparse.Namespace, trainer: str) -> dict[str, str]:
    """The environment the protocol scripts read (see ``bash scripts/train.sh`` usage)."""
    env = dict(os.environ)
    threads = str(max(1, (os.cpu_count() or 1) // args.jobs))
    env.update({
        "OMP_NUM_THREADS": threads,  # torch's intra-op pool; see the module docstring
        "MKL_NUM_THREADS": threads,
        "HF_HUB_OFFLINE": "1",
        "DATA": osp.abspath(args.data),
        "TRAINER": trainer,
        "CFG": args.cfg,
        "SEEDS": args.seeds,
        "SHOTS": str(args.shots),
        "OUTPUT": osp.abspath(args.output),
        "OPTS": f"MODEL.BACKBONE.NAME {shlex.quote(osp.abspath(args.clip))} {args.opts}".strip(),
        "SOURCE": SOURCE,
        "TARGETS": " ".join(TARGETS),
        "PYTHON": sys.executable,
    })
    return env


def run_step(step: Step, env: dict[str, str], log_path: str, bar: tqdm) -> None:
    """Run one protocol script, logging to ``log_path`` and showing its latest line on the bar.

    The one place that knows how a run is launched: swap this to call train.py directly if needed.
    """
    command = ["bash", osp.join(REPO, "scripts", f"{step.script}.sh"), SOURCE, step.task]
    tail: deque[str] = deque(maxlen=30)
    last_refresh = 0.0
    with open(log_path, "a") as log:
        log.write(f"$ {' '.join(command)}  # TRAINER={env['TRAINER']}\n")
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


def print_results(args: argparse.Namespace) -> None:
    """Print the Markdown tables of each task and let tools/results.py write its plot."""
    for task in TASKS:
        tree = osp.join(osp.abspath(args.output), task)
        result = subprocess.run([sys.executable, osp.join(REPO, "tools", "results.py"), tree],
                                cwd=REPO, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"demo: tools/results.py {tree} failed:\n{result.stderr}")
        print(f"\n## {task} (embedded world, {args.shots} shots, seeds {args.seeds})\n")
        print(result.stdout.strip())
        print(f"\nplot: {osp.join(tree, 'results.png')}")


def summary(output: str) -> str:
    """One Markdown table per task with a row per trainer, from the results.json files results.py wrote."""
    lines = []
    for task in TASKS:
        with open(osp.join(osp.abspath(output), task, "results.json")) as f:
            tables = json.load(f)["tables"]
        if task == "base2new":
            lines += [f"### {task}: all trainers", "", "| Trainer | Base | New | HM |", "|---|---|---|---|"]
            lines += [f"| {t['trainer']} | {t['average']['base']:.2f} | {t['average']['new']:.2f} | {t['average']['hm']:.2f} |"
                      for t in tables]
        else:
            targets = [r["dataset"] for r in tables[0]["rows"] if r["role"] == "target"]
            lines += ["", f"### {task}: all trainers", "",
                      "| Trainer | " + " | ".join([f"{tables[0]['source']} (source)", *targets, "target avg"]) + " |",
                      "|---" * (len(targets) + 3) + "|"]
            for t in tables:
                accuracy = {r["dataset"]: r["accuracy"]["mean"] for r in t["rows"]}
                cells = [accuracy.get(t["source"]), *(accuracy.get(d) for d in targets), t["target_average"]]
                lines.append(f"| {t['trainer']} | " + " | ".join("—" if c is None else f"{c:.2f}" for c in cells) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--output", default=osp.join(REPO, "demo_output"), help="output tree (default: demo_output/)")
    p.add_argument("--data", default=osp.join(REPO, "data"), help="data root; the world goes to DATA/world")
    p.add_argument("--clip", default=CHECKPOINT, help="CLIP checkpoint (default: the shipped small CLIP)")
    p.add_argument("--cfg", default="world", help="trainer config name under configs/trainers/<T>/")
    p.add_argument("--seeds", default="1", help='space-separated seeds, e.g. "1 2 3"')
    p.add_argument("--shots", type=int, default=16)
    p.add_argument("--trainers", default=",".join(TRAINERS), help="comma-separated trainers")
    p.add_argument("--opts", default="", help="extra KEY VALUE overrides for train.py")
    p.add_argument("--fresh", action="store_true", help="delete --output first instead of reusing finished runs")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="runs at once (default: 2, or 1 on one core)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    if not osp.isfile(args.clip):
        raise SystemExit(f"demo: CLIP checkpoint {args.clip} not found; make it with tools/pretrain_world_clip.py "
                         "(see assets/README.md)")
    if args.fresh and osp.isdir(args.output):
        shutil.rmtree(args.output)
    os.makedirs(args.output, exist_ok=True)
    start = time.time()
    # Generated here once (and held shared), so parallel chains never race to write the same tree.
    for name in (SOURCE, *TARGETS):
        logger.info("World data: %s", prepare_task(osp.abspath(args.data), task_of(name)))
    trainers = tuple(t.strip() for t in args.trainers.split(",") if t.strip())
    if args.jobs < 1:
        raise SystemExit(f"demo: --jobs is {args.jobs}; it must be >= 1")
    log_dir = osp.join(args.output, "logs")
    os.makedirs(log_dir, exist_ok=True)
    chains = plan(trainers)
    failed = threading.Event()  # after a failure no chain starts another run

    def run_chain(chain: list[Step], bar: tqdm) -> None:
        log_path = osp.join(log_dir, f"{chain[0].task}_{chain[0].trainer}.log")  # one log per chain: no interleaving
        for step in chain:
            if failed.is_set():
                return
            try:
                run_step(step, script_env(args, step.trainer), log_path, bar)
            except BaseException:
                failed.set()
                raise
            bar.update(1)

    n_runs = sum(len(chain) for chain in chains)
    with tqdm(total=n_runs, desc=f"demo ({args.jobs} at once)", unit="run", dynamic_ncols=True) as bar:
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = [pool.submit(run_chain, chain, bar) for chain in chains]
        for future in futures:
            future.result()  # re-raises the first failure's SystemExit
    print_results(args)
    print(f"\n## Summary (embedded world, {args.shots} shots, seeds {args.seeds})\n")
    print(summary(args.output))
    print(f"\ndemo: {n_runs} protocol runs in {time.time() - start:.0f} s; logs: {log_dir}")


if __name__ == "__main__":
    main()
