"""Accept a GPU: correctness first (every trainer against the CPU, every precision, torchrun), then speed.

Checks, in order, each a row of the pass/fail table printed last (exit code 1 when a row fails):

1. ``compare``: every registered trainer (``TRAINER_REGISTRY`` after ``import trainers``) builds through
   train.py's config path on a generated Describable-Textures-layout tree with a tiny random CLIP
   (``clip.tiny``), PREC fp32, twice: on the CPU (the reference) and on ``--device``. Both start from the
   reference's learned weights and take the same ``--steps`` training steps (the engine's
   ``forward_backward``) on the same batches, then evaluate one test batch (``model_inference``). The losses
   of every step, the gradients of the learned parameters after the last step and the logits must agree
   within ``COMPARE_RTOL`` (1e-4) relative: the largest absolute difference over a group (losses, gradients,
   logits) divided by the largest magnitude in the reference's group, so a near-zero entry (a bias in front
   of a BatchNorm) is judged against its group's scale. On a CUDA device the engine's PREC fp32 has turned
   TF32 off (torch leaves it on for cuDNN convolutions, which round fp32 inputs to 10 bits); the row fails
   where it is still on. An
   evaluation-only trainer (``EVAL_ONLY``) compares its logits. With ``--device cpu`` the second build is
   another CPU build, so the comparison code runs where no GPU is.
2. ``precision``: each PREC (fp32, amp, fp16, bf16) runs the same steps and evaluation on ``--device`` for
   every trainer: every loss must be finite, and the last step's losses and the logits after the steps must
   lie within ``PRECISION_RTOL[prec]`` (same measure; 0.1, see there why) of the CPU fp32 reference. A step
   the fp16 loss scaler skips (overflowed gradients, as a GradScaler does in a run's first steps) is counted
   and replaced by the next batch, and the reference is re-run on the batches that updated the weights. A
   PREC the device runs as fp32 (fp16 and amp on a CPU, unless the engine allows them there) is skipped.
3. ``torchrun``: ``python -m torch.distributed.run --standalone --nproc_per_node 1`` starts this file as a
   worker, which joins a process group of the device's backend (nccl on CUDA, gloo on a CPU) and checks an
   all-reduce and a broadcast, then runs train.py's command line (the script, in-process) for one epoch of a
   training trainer on the generated tree, on ``--device``: it must exit 0 and log its accuracy.
4. ``speed``: on CUDA, the performance tables (tools/benchmark.py on a random ViT-B/16-dims CLIP: GOPro,
   CoOp and CoCoOp in fp32 and PREC auto, then the 1000-class step with and without a 12 GB budget), each
   run capped at ``SPEED_RUN_TIMEOUT_S``; their JSON lines go to ``OUT_DIR/gpu_check.jsonl`` and their
   Markdown tables are printed. On a CPU those runs are listed as skipped and one tiny-CLIP benchmark run
   stands in, so the same code runs.

The whole check is bounded by ``--time-limit-s`` (default 480 s): a subprocess is capped at what is left,
and one that cannot start in time fails. Usage: ``tools/gpu_check.sh`` (CUDA; exits 2 without it) or
``tools/gpu_check.sh --device cpu``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import os.path as osp
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere
sys.path.insert(0, str(REPO / "tools"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import benchmark  # noqa: E402  (tools/benchmark.py: the dataset generator, the registry, the speed runs)
import torch  # noqa: E402

logger = logging.getLogger("gpu_check")

CHECKS = ("compare", "precision", "torchrun", "speed")
PRECISIONS = ("fp32", "amp", "fp16", "bf16")
COMPARE_RTOL = 1e-4  # fp32 on two devices: only the order of float operations differs
# Allowed relative deviation of a low-precision run from CPU fp32 after the same updates (last step's
# losses, logits after the steps). The tiny CLIP learns fast (3 SGD steps move its logits by tens of
# percent), so rounding in the gradients shows in the end point: measured on a CPU, bf16 deviates up to
# 2.7e-2 and fp16 autocast (with its GradScaler, fp32 weights) up to 2.4e-2; PREC fp16 on a GPU also stores
# the backbone in fp16. A step taken on overflowed gradients, a missing or doubled unscale, or steps out of
# line with fp32's move the logits by O(1) (0.5 measured when three steps an fp16 scaler skipped were
# compared with three applied fp32 steps); 0.1 sits between. fp32 on two devices must agree to COMPARE_RTOL.
PRECISION_RTOL = {"fp32": COMPARE_RTOL, "amp": 1e-1, "fp16": 1e-1, "bf16": 1e-1}
SEED = 1
N_CLASSES = 4
TRAIN_PER_CLASS = 3  # 12 training images: 3 steps of the tiny configs' batch of 4
TEST_PER_CLASS = 2  # 8 test images: one batch of the tiny configs' test batch size
MAX_SCALER_SKIPS = 16  # a GradScaler starts at 2**16 and halves its scale at each skipped step
PERTURB_SCALE = 1.01  # --perturb: what the compared build's learned weights are multiplied by
SPEED_RUN_TIMEOUT_S = 150
TORCHRUN_TIMEOUT_S = 300
MIN_SUBPROCESS_S = 20  # a subprocess with less time left than this is not started


# ---------------------------------------------------------------- rows of the table


@dataclass
class Row:
    """One line of the pass/fail table."""

    check: str
    name: str
    status: str  # PASS, FAIL or SKIP
    detail: str


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)

    def add(self, check: str, name: str, status: str, detail: str) -> Row:
        row = Row(check, name, status, detail)
        self.rows.append(row)
        log = logger.error if status == "FAIL" else logger.info
        log("%s %s: %s (%s)", check, name, status, detail)
        return row

    @property
    def failed(self) -> bool:
        return any(r.status == "FAIL" for r in self.rows)

    def table(self) -> str:
        lines = ["| check | what | result | detail |", "|---|---|---|---|"]
        lines += [f"| {r.check} | {r.name} | {r.status} | {r.detail.replace('|', '/')} |" for r in self.rows]
        counts = {s: sum(r.status == s for r in self.rows) for s in ("PASS", "FAIL", "SKIP")}
        lines.append("")
        lines.append(f"gpu_check: {counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped"
                     f" -> {'FAIL' if self.failed else 'PASS'}")
        return "\n".join(lines)


def one_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())}"[:300]


def squeezed(text: str, limit: int = 300) -> str:
    return " ".join(text.split())[-limit:]


@dataclass
class Deadline:
    """The time left to the whole check (``--time-limit-s``)."""

    end: float

    def left(self) -> float:
        return self.end - time.monotonic()


def run_capped(command: list[str], timeout_s: float, env: dict | None = None) -> tuple[int | None, str, str]:
    """(exit code, or None when it ran past ``timeout_s``; stdout; stderr) of ``command`` in its own process
    group, which is killed whole on a timeout (a benchmark run has children of its own)."""
    proc = subprocess.Popen(command, cwd=str(REPO), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
        return proc.returncode, stdout, stderr
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        return None, stdout, stderr + f"\ntimed out after {timeout_s:.0f} s"


# ---------------------------------------------------------------- the generated tree and tiny CLIP


@dataclass(frozen=True)
class Workspace:
    """A generated dataset tree, a tiny CLIP checkpoint and a folder for run outputs."""

    root: str
    data_root: str
    clip_path: str


def make_workspace(root: str) -> Workspace:
    from clip.tiny import build_tiny_clip, save_openai_checkpoint

    data_root = osp.join(root, "data")
    names = benchmark.class_names(N_CLASSES, 1)
    benchmark.write_dataset(data_root, names, TRAIN_PER_CLASS, TEST_PER_CLASS, seed=SEED)
    torch.manual_seed(SEED)
    clip_path = osp.join(root, "tiny-clip.pt")
    save_openai_checkpoint(build_tiny_clip("vit"), clip_path)
    return Workspace(root, data_root, clip_path)


def tiny_config(trainer_name: str) -> str:
    """Every registered method ships ``configs/trainers/<Name>/tiny.yaml`` (the tiny CLIP's input, small batches)."""
    path = REPO / "configs" / "trainers" / trainer_name / "tiny.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"trainer {trainer_name} is registered but has no {path.relative_to(REPO)}")
    return str(path)


def config_node(trainer_name: str) -> str:
    return benchmark.registered_trainers()[trainer_name].CFG_NODE or trainer_name.upper()  # the engine's rule


def train_argv(ws: Workspace, trainer_name: str, prec: str, device: str, output_dir: str) -> list[str]:
    """train.py's command line for ``trainer_name`` on the generated tree with the tiny CLIP."""
    return [
        "--root", ws.data_root, "--trainer", trainer_name, "--seed", str(SEED), "--output-dir", output_dir,
        "--dataset-config-file", str(REPO / "configs" / "datasets" / "dtd.yaml"),
        "--config-file", tiny_config(trainer_name),
        "MODEL.BACKBONE.NAME", ws.clip_path, "DATASET.NUM_SHOTS", "-1",
        "USE_CUDA", str(torch.device(device).type == "cuda"), f"TRAINER.{config_node(trainer_name)}.PREC", prec,
    ]


def build(ws: Workspace, trainer_name: str, prec: str, device: str, tag: str):
    """A trainer built as train.py builds it (its config path, then ``build_trainer``)."""
    import datasets  # noqa: F401  (registers every dataset loader and its config keys)
    import trainers  # noqa: F401  (registers every trainer and its config keys)
    from dassl.command_line import parse_args, setup_cfg
    from dassl.engine import build_trainer
    from dassl.utils import set_random_seed

    output_dir = osp.join(ws.root, "runs", f"{trainer_name}-{tag}")
    cfg = setup_cfg(parse_args(train_argv(ws, trainer_name, prec, device, output_dir)))
    set_random_seed(cfg.SEED)
    trainer = build_trainer(cfg)
    if trainer.device.type != torch.device(device).type:
        raise RuntimeError(f"asked for {device}, the trainer runs on {trainer.device}")
    return trainer


# ---------------------------------------------------------------- one run: steps, gradients, logits


def learned_modules(trainer) -> dict[str, torch.nn.Module]:
    """The modules the trainer registered with the engine (those its checkpoints hold)."""
    return {name: trainer._models[name] for name in trainer.get_model_names()}


def learned_parameters(trainer) -> dict[str, torch.nn.Parameter]:
    return {f"{name}.{key}": p for name, module in learned_modules(trainer).items()
            for key, p in module.named_parameters() if p.requires_grad}


@dataclass
class RunResult:
    precision: str  # as the trainer resolved it
    losses: list[dict[str, float]]  # the loss terms of every applied step
    grads: dict[str, torch.Tensor]  # learned parameter -> gradient after the last step (CPU, fp32)
    logits: torch.Tensor  # the test batch's logits (CPU, fp32)
    applied: list[int]  # indices of the batches whose step updated the weights
    skipped: list[dict[str, float]]  # the loss terms of steps the loss scaler skipped (gradients overflowed)


@dataclass(frozen=True)
class Inputs:
    """What every run of a trainer gets: the reference's learned weights, training batches, test images."""

    state: dict[str, dict]
    batches: list[dict]
    images: torch.Tensor


def draw_inputs(trainer, n_batches: int) -> Inputs:
    from dassl.utils import set_random_seed

    set_random_seed(SEED)
    batches = []
    while len(batches) < n_batches:  # the tree holds a few batches; a later epoch draws new views of them
        batches += list(trainer.train_loader_x)
    images = next(iter(trainer.test_loader))["img"]
    state = {name: {k: v.detach().clone() for k, v in m.state_dict().items()}
             for name, m in learned_modules(trainer).items()}
    return Inputs(state, batches[:n_batches], images)


def run(trainer, inputs: Inputs, steps: int, perturb: bool = False) -> RunResult:
    """From the reference's learned weights: ``steps`` training steps that update the weights, then one evaluation.

    A step the trainer's loss scaler skips (its gradients overflowed fp16, so the scale is lowered and the
    weights are left alone, which is what a GradScaler does in the first steps of a run) is recorded and the
    next batch is taken, so that ``steps`` updates are compared; the inputs must hold enough batches.
    """
    for name, module in learned_modules(trainer).items():
        module.load_state_dict(inputs.state[name])
    if perturb:
        with torch.no_grad():
            for p in learned_parameters(trainer).values():
                p.mul_(PERTURB_SCALE)
    losses, skipped, applied = [], [], []
    scaler = trainer.grad_scaler
    trainer.set_model_mode("train")
    trainer.num_batches = len(inputs.batches)
    for trainer.batch_idx, batch in enumerate(inputs.batches):  # noqa: B020  (the engine reads batch_idx)
        if len(applied) == steps:
            break
        scale = scaler.get_scale() if scaler is not None else None
        terms = {k: float(v) for k, v in trainer.forward_backward(batch).items() if k.startswith("loss")}
        if scaler is not None and scaler.get_scale() < scale:
            skipped.append(terms)
        else:
            applied.append(trainer.batch_idx)
            losses.append(terms)
    if len(applied) < steps:
        raise RuntimeError(f"the loss scaler skipped {len(skipped)} of {len(inputs.batches)} steps: fewer than "
                           f"{steps} updated the weights")
    grads = {k: p.grad.detach().float().cpu().clone() for k, p in learned_parameters(trainer).items()
             if p.grad is not None}
    trainer.set_model_mode("eval")
    with torch.no_grad():
        logits = trainer.model_inference(inputs.images.to(trainer.device)).detach().float().cpu()
    return RunResult(trainer.precision, losses, grads, logits, applied, skipped)


def relative_error(reference: list[torch.Tensor], other: list[torch.Tensor]) -> float:
    """Largest absolute difference over the group over the largest magnitude of the reference's group (NaN-safe:
    a non-finite entry gives inf)."""
    if len(reference) != len(other) or any(a.shape != b.shape for a, b in zip(reference, other, strict=True)):
        return math.inf
    if not reference:
        return 0.0
    scale = max(float(t.abs().max()) if t.numel() else 0.0 for t in reference)
    diff = max(float((a - b).abs().max()) if a.numel() else 0.0 for a, b in zip(reference, other, strict=True))
    if not math.isfinite(diff):
        return math.inf
    return diff / max(scale, 1e-12)


def loss_table(losses: list[dict[str, float]], keys: list[str]) -> torch.Tensor:
    return torch.tensor([[step.get(k, math.nan) for k in keys] for step in losses], dtype=torch.float64)


def compare_runs(reference: RunResult, other: RunResult, last_step_only: bool = False) -> dict[str, float]:
    """Relative errors of ``other`` against ``reference``: losses, gradients (when both have them), logits."""
    keys = sorted({k for step in reference.losses for k in step})
    ref_losses, losses = loss_table(reference.losses, keys), loss_table(other.losses, keys)
    if last_step_only and len(ref_losses):
        ref_losses, losses = ref_losses[-1:], losses[-1:]
    errors = {"losses": relative_error([ref_losses], [losses]) if keys else 0.0}
    if reference.grads or other.grads:
        names = sorted(reference.grads)
        if sorted(other.grads) != names:
            errors["gradients"] = math.inf
        elif not last_step_only:
            errors["gradients"] = relative_error([reference.grads[n] for n in names], [other.grads[n] for n in names])
    errors["logits"] = relative_error([reference.logits], [other.logits])
    return errors


def shown(errors: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1e}" for k, v in errors.items())


# ---------------------------------------------------------------- checks


def tf32_left_on(device: str) -> str:
    """What TF32 the engine's PREC fp32 left on on ``device`` (it turns it off on CUDA); empty where none."""
    if torch.device(device).type != "cuda":
        return ""
    on = [name for name, flag in (("matrix products", torch.backends.cuda.matmul.allow_tf32),
                                  ("cuDNN convolutions", torch.backends.cudnn.allow_tf32)) if flag]
    return ", ".join(on)


def resolved_as(prec: str) -> str:
    """What a device that runs PREC ``prec`` resolves it to (amp and fp16 are both fp16 autocast)."""
    return "fp16" if prec == "amp" else prec


def non_finite(result: RunResult) -> list[str]:
    return [f"{k}={v}" for step in result.losses + result.skipped for k, v in step.items() if not math.isfinite(v)]


@dataclass
class PrecisionOutcome:
    trainer: str
    error: float = 0.0  # the worst relative deviation from CPU fp32
    failure: str = ""
    skipped_steps: int = 0  # steps the loss scaler skipped


def check_precision(ws: Workspace, name: str, prec: str, device: str, inputs: Inputs, reference: RunResult,
                    steps: int) -> PrecisionOutcome:
    """``steps`` updates in PREC ``prec`` on ``device`` against the CPU fp32 reference on the same batches."""
    outcome = PrecisionOutcome(name)
    result = run(build(ws, name, prec, device, prec), inputs, steps)
    outcome.skipped_steps = len(result.skipped)
    if result.precision != resolved_as(prec):
        outcome.failure = f"PREC {prec} ran as {result.precision}"
    elif bad := non_finite(result):
        outcome.failure = f"non-finite losses ({', '.join(bad[:3])})"
    else:
        if result.applied != list(range(steps)):  # the scaler skipped some: the reference takes the same batches
            taken = Inputs(inputs.state, [inputs.batches[i] for i in result.applied], inputs.images)
            reference = run(build(ws, name, "fp32", "cpu", f"reference-{prec}"), taken, steps)
        errors = compare_runs(reference, result, last_step_only=True)
        logger.info("%s PREC %s vs CPU fp32: %s (%d steps skipped by the loss scaler)", name, prec, shown(errors),
                    outcome.skipped_steps)
        outcome.error = max(errors.values())
        if outcome.error > PRECISION_RTOL[prec]:
            outcome.failure = shown(errors)
    return outcome


def precision_row(report: Report, prec: str, outcomes: list[PrecisionOutcome], steps: int) -> None:
    failed = [o for o in outcomes if o.failure]
    if failed:
        report.add("precision", prec, "FAIL", "; ".join(f"{o.trainer}: {o.failure}" for o in failed))
        return
    detail = f"{len(outcomes)} trainers, {steps} updates: losses finite"
    if prec != "fp32":
        worst = max(outcomes, key=lambda o: o.error)
        detail += (f"; last-step losses and logits within {PRECISION_RTOL[prec]:.0e} of CPU fp32 "
                   f"(worst {worst.error:.1e}, {worst.trainer})")
        skips = [o.skipped_steps for o in outcomes]
        if any(skips):
            detail += f"; the loss scaler skipped {min(skips)}-{max(skips)} first steps"
    report.add("precision", prec, "PASS", detail)


def check_trainers(ws: Workspace, args: argparse.Namespace, report: Report) -> None:
    """The ``compare`` and ``precision`` checks: one CPU fp32 reference per trainer, the device's runs against it."""
    from dassl.engine.precision import choose_precision

    registered = benchmark.registered_trainers()
    names = args.trainer or sorted(registered)
    device_name = "a second CPU build" if args.device == "cpu" else args.device
    runnable = {p: choose_precision(p, args.device)[0] == resolved_as(p) for p in PRECISIONS}
    precisions = [p for p in PRECISIONS if runnable[p] and p != "fp32"] if "precision" in args.checks else []
    # A run with a loss scaler may skip its first steps; it takes further batches until it has made its updates.
    n_batches = args.steps + (MAX_SCALER_SKIPS if any(resolved_as(p) == "fp16" for p in precisions) else 0)
    outcomes: dict[str, list[PrecisionOutcome]] = {p: [] for p in PRECISIONS}
    for name in names:
        if args.deadline.left() < 0:
            report.add("compare", name, "FAIL", "not run: --time-limit-s is spent")
            for prec in PRECISIONS:
                outcomes[prec].append(PrecisionOutcome(name, failure="not run: --time-limit-s is spent"))
            continue
        steps = 0 if getattr(registered[name], "EVAL_ONLY", False) else args.steps
        what = f"{steps} steps + eval" if steps else "eval only"
        try:
            reference_trainer = build(ws, name, "fp32", "cpu", "reference")
            inputs = draw_inputs(reference_trainer, n_batches if steps else 0)
            reference = run(reference_trainer, inputs, steps)
            del reference_trainer
        except Exception as err:  # noqa: BLE001 - any failure is this trainer's row; the others still run
            logger.debug("%s", traceback.format_exc())
            report.add("compare", name, "FAIL", f"the CPU fp32 reference run failed: {one_line(err)}")
            for prec in PRECISIONS:
                outcomes[prec].append(PrecisionOutcome(name, failure="no CPU reference"))
            continue
        fp32 = PrecisionOutcome(name)
        try:
            result = run(build(ws, name, "fp32", args.device, "fp32"), inputs, steps, perturb=name in args.perturb)
            errors = compare_runs(reference, result)
            tf32 = tf32_left_on(args.device)
            ok = all(e <= COMPARE_RTOL for e in errors.values()) and not tf32
            row = f"fp32 {what} on {device_name} vs CPU: {shown(errors)} (tolerance {COMPARE_RTOL:.0e})"
            if tf32:
                row += f"; PREC fp32 left TF32 on for {tf32}"
            if bad := non_finite(result):
                fp32.failure = f"non-finite losses ({', '.join(bad[:3])})"
        except Exception as err:  # noqa: BLE001
            logger.debug("%s", traceback.format_exc())
            ok, row = False, f"fp32 run on {args.device} failed: {one_line(err)}"
            fp32.failure = one_line(err)
        if "compare" in args.checks:
            report.add("compare", name, "PASS" if ok else "FAIL", row)
        outcomes["fp32"].append(fp32)
        for prec in precisions:
            try:
                outcomes[prec].append(check_precision(ws, name, prec, args.device, inputs, reference, steps))
            except Exception as err:  # noqa: BLE001
                logger.debug("%s", traceback.format_exc())
                outcomes[prec].append(PrecisionOutcome(name, failure=one_line(err)))
    if "precision" not in args.checks:
        return
    for prec in PRECISIONS:
        if runnable[prec]:
            precision_row(report, prec, outcomes[prec], args.steps)
        else:
            resolved, why = choose_precision(prec, args.device)
            report.add("precision", prec, "SKIP", f"runs as {resolved} on {args.device} ({why}); needs CUDA")


def training_trainer(args: argparse.Namespace) -> str:
    """The trainer the torchrun and tiny speed runs use: ``--torchrun-trainer``, else the first that trains."""
    registered = benchmark.registered_trainers()
    if args.torchrun_trainer:
        return args.torchrun_trainer
    return next(n for n in sorted(registered) if not getattr(registered[n], "EVAL_ONLY", False))


def check_torchrun(ws: Workspace, args: argparse.Namespace, report: Report) -> None:
    """One process through torchrun: a process group of the device's backend, then train.py for one epoch."""
    trainer_name = training_trainer(args)
    output_dir = osp.join(ws.root, "runs", "torchrun")
    result_file = osp.join(ws.root, "torchrun.json")
    timeout = min(TORCHRUN_TIMEOUT_S, args.deadline.left())
    if timeout < MIN_SUBPROCESS_S:
        report.add("torchrun", "all", "FAIL", f"not run: {args.deadline.left():.0f} s left of --time-limit-s")
        return
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
        str(Path(__file__).resolve()), "--torchrun-worker", result_file, "--device", args.device, "--",
        *train_argv(ws, trainer_name, "fp32", args.device, output_dir),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    code, stdout, stderr = run_capped(command, timeout, env)
    tail = (stdout + stderr)[-3000:]
    worker = {}
    with contextlib.suppress(OSError, ValueError), open(result_file) as f:
        worker = json.load(f)
    group = worker.get("group")
    if group is None:
        report.add("torchrun", "process group", "FAIL", f"the worker did not report (exit code {code}): "
                   f"{squeezed(tail)}")
    else:
        report.add("torchrun", f"{group['backend']} group of 1", "PASS" if group["ok"] else "FAIL", group["detail"])
    log = ""
    with contextlib.suppress(OSError), open(osp.join(output_dir, "log.txt")) as f:
        log = f.read()
    ok = code == 0 and worker.get("train_exit_code") == 0 and "Finish training" in log and "* accuracy:" in log
    detail = f"train.py {trainer_name}, 1 epoch on {args.device}: exit code {code}"
    if not ok:
        detail += f"; {squeezed(tail)}"
        logger.error("torchrun output:\n%s", tail)
    report.add("torchrun", "train.py, 1 process", "PASS" if ok else "FAIL", detail)


def torchrun_worker(result_file: str, device_name: str, train_args: list[str]) -> int:
    """Under torchrun: join the process group, check two collectives, leave it, then run train.py's cli."""
    import runpy

    import torch.distributed as dist

    result: dict = {}
    device = torch.device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    try:
        import datetime

        backend = dist.get_default_backend_for_device(device)
        bound = {"device_id": device} if device.type == "cuda" else {}  # nccl binds the group to this GPU
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=120), **bound)
        world, rank = dist.get_world_size(), dist.get_rank()
        summed = torch.full((3,), float(rank + 1), device=device)
        dist.all_reduce(summed)
        sent = torch.arange(3.0, device=device) if rank == 0 else torch.zeros(3, device=device)
        dist.broadcast(sent, src=0)
        expected = float(world * (world + 1) // 2)
        ok = bool((summed == expected).all()) and torch.equal(sent.cpu(), torch.arange(3.0))
        result["group"] = {"backend": backend, "ok": ok,
                           "detail": f"world size {world}; all_reduce {summed.tolist()} (expected {expected}), "
                                     f"broadcast {sent.tolist()} on {device}"}
        dist.destroy_process_group()
    except Exception as err:  # noqa: BLE001 - reported as the group's row
        result["group"] = {"backend": "process", "ok": False, "detail": one_line(err)}
    with open(result_file, "w") as f:
        json.dump(result, f)
    # train.py's command line, run as the script (its exit code), in this process so it inherits the rank.
    sys.argv = [str(REPO / "train.py"), *train_args]
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    result["train_exit_code"] = code
    with open(result_file, "w") as f:
        json.dump(result, f)
    return code


# ---------------------------------------------------------------- speed (tools/benchmark.py)


def speed_runs(device: str, ws: Workspace, trainer_name: str) -> list[tuple[str, list[str]]]:
    """(label, benchmark arguments) of each speed run: the README's tables on CUDA, one tiny run on a CPU."""
    if torch.device(device).type != "cuda":
        # One phase in this process (--phase): the records and the table are made as on CUDA, at a fraction
        # of the start-up cost.
        return [(f"{trainer_name} tiny CLIP, cpu fp32, train phase", [
            "--phase", "train", "--device", "cpu", "--threads", "1", "--backbone", ws.clip_path, "--config-file",
            tiny_config(trainer_name), "--trainer", trainer_name, "--precision", "fp32", "--classes", "2",
            "--batch-size", "2", "--steps", "1", "--warmup", "0"])]
    common = ["--device", "cuda", "--threads", "4", "--batch-size", "4"]
    runs = []
    for precision in ("fp32", "auto"):
        runs.append((f"GOPro CoOp CoCoOp, 10 classes, PREC {precision}", [
            *common, "--precision", precision, "--trainer", "GOPro", "CoOp", "CoCoOp", "--classes", "10",
            "--steps", "5", "--warmup", "2", "--end-to-end"]))
    for trainer in ("GOPro", "CoCoOp"):
        for budget in ("12", ""):
            runs.append((f"{trainer}, 1000 classes, train, budget {budget or 'none'}", [
                *common, "--precision", "auto", "--trainer", trainer, "--classes", "1000", "--phases", "train",
                "--steps", "2", "--warmup", "1", *(["--memory-budget-gb", budget] if budget else [])]))
    return runs


def check_speed(ws: Workspace, args: argparse.Namespace, report: Report) -> None:
    """Each speed run in its own capped process; its JSON records to OUT_DIR/gpu_check.jsonl, then the tables."""
    records_file = osp.join(args.out_dir, "gpu_check.jsonl")
    open(records_file, "w").close()
    if torch.device(args.device).type != "cuda":
        for label, _ in speed_runs("cuda", ws, ""):
            report.add("speed", label, "SKIP", "needs CUDA (random ViT-B/16)")
    records = []
    for label, bench_args in speed_runs(args.device, ws, training_trainer(args)):
        timeout = min(SPEED_RUN_TIMEOUT_S, args.deadline.left())
        if timeout < MIN_SUBPROCESS_S:
            report.add("speed", label, "FAIL", f"not run: {args.deadline.left():.0f} s left of --time-limit-s")
            continue
        command = [sys.executable, str(REPO / "tools" / "benchmark.py"), "--json", *bench_args]
        expected = bench_args[bench_args.index("--trainer") + 1 :]
        expected = expected[: next((i for i, a in enumerate(expected) if a.startswith("--")), len(expected))]
        code, stdout, stderr = run_capped(command, timeout)
        found = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
        with open(records_file, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in found)
        records += found
        ok = code == 0 and [r.get("trainer") for r in found] == expected
        detail = f"exit code {code}, {len(found)}/{len(expected)} records"
        if not ok:
            detail += f"; {squeezed(stderr)}"
        report.add("speed", label, "PASS" if ok else "FAIL", detail)
    if records:
        print(benchmark.markdown_tables(records), flush=True)


# ---------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="\n".join(__doc__.splitlines()[2:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (skips what needs CUDA)")
    parser.add_argument("--out-dir", default=os.environ.get("OUT_DIR", "gpu_check_output"),
                        help="where gpu_check.jsonl (the speed records) goes (default: $OUT_DIR or gpu_check_output)")
    parser.add_argument("--checks", default=",".join(CHECKS), help=f"comma-separated subset of {', '.join(CHECKS)}")
    parser.add_argument("--trainer", nargs="+", default=None, help="trainers to compare (default: every registered)")
    parser.add_argument("--torchrun-trainer", default="", help="trainer of the torchrun and tiny speed runs "
                        "(default: the first registered one that trains)")
    parser.add_argument("--time-limit-s", type=float, default=480, help="bound on the whole check (default 480)")
    parser.add_argument("--steps", type=int, default=3, help="training steps per run (default 3)")
    parser.add_argument("--verbose", action="store_true", help="the engine's INFO logs and tracebacks of failures")
    # For the test suite only: scale one trainer's compared learned weights, so that its row must fail.
    parser.add_argument("--perturb", nargs="+", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--torchrun-worker", metavar="RESULT_FILE", default=None, help=argparse.SUPPRESS)
    parser.add_argument("train_args", nargs="*", help=argparse.SUPPRESS)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.torchrun_worker is not None:
        return args
    if args.train_args:
        raise SystemExit(f"gpu_check: unexpected arguments {args.train_args}")
    args.checks = [c.strip() for c in args.checks.split(",") if c.strip()]
    if not args.checks or any(c not in CHECKS for c in args.checks):
        raise SystemExit(f"gpu_check: --checks must list some of {', '.join(CHECKS)}")
    registered = benchmark.registered_trainers()
    unknown = [n for n in (args.trainer or []) + args.perturb + [args.torchrun_trainer] if n and n not in registered]
    if unknown:
        raise SystemExit(f"gpu_check: unknown trainer(s) {unknown}; registered: {', '.join(sorted(registered))}")
    if torch.device(args.device).type not in ("cuda", "cpu"):
        raise SystemExit("gpu_check: --device must be cuda or cpu")
    if args.steps < 1:
        raise SystemExit("gpu_check: --steps must be >= 1")
    return args


def device_line(device: str) -> str:
    if torch.device(device).type == "cuda":
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    return f"CPU ({os.cpu_count()} cores), torch {torch.__version__}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.torchrun_worker is not None:
        return torchrun_worker(args.torchrun_worker, args.device, args.train_args)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    logger.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: CUDA is not available (torch.cuda.is_available() is False); run this on a GPU machine, "
              "or pass --device cpu", file=sys.stderr)
        return 2
    logger.info("gpu_check on %s", device_line(args.device))
    started = time.monotonic()
    args.deadline = Deadline(started + args.time_limit_s)
    os.makedirs(args.out_dir, exist_ok=True)
    report = Report()
    steps: list[tuple[str, Callable]] = [("torchrun", check_torchrun), ("speed", check_speed)]
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as workdir:
        ws = make_workspace(workdir)
        if {"compare", "precision"} & set(args.checks):
            check_trainers(ws, args, report)
        for check, fn in steps:
            if check in args.checks:
                fn(ws, args, report)
    for check in CHECKS:
        if check not in args.checks:
            report.add(check, "all", "SKIP", "not selected (--checks)")
    elapsed = time.monotonic() - started
    print(f"\ngpu_check on {device_line(args.device)}, {elapsed:.0f} s\n{report.table()}", flush=True)
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
