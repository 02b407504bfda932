"""PREC resolved once per run: auto from (mocked) CPU flags and CUDA, the engine's use of it, fp32 where it matters."""
from __future__ import annotations

import logging

import pytest
import torch
from yacs.config import CfgNode as CN

from dassl.config import get_cfg_default
from dassl.engine import TRAINER_REGISTRY, build_trainer, precision
from dassl.engine.precision import (
    autocast_context,
    build_grad_scaler,
    check_precision,
    choose_precision,
    cpu_flags,
    resolve_precision,
)
from tests.test_engine import EngineToyTrainer, toy_opts, toy_root  # noqa: F401  (toy_root is a fixture)


@pytest.fixture
def flags(monkeypatch):
    """Set the CPU flags that ``choose_precision`` sees."""

    def set_flags(*names: str) -> None:
        monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(names))

    return set_flags


def test_auto_picks_bf16_only_on_a_cpu_with_fast_bf16(flags):
    flags("sse4_2", "avx512f", "amx_bf16", "amx_tile")
    assert choose_precision("auto", "cpu") == ("bf16", "PREC auto: the CPU has amx_bf16")
    flags("avx512_bf16")
    assert choose_precision("auto", "cpu")[0] == "bf16"
    flags("sse4_2", "avx2")
    resolved, reason = choose_precision("auto", "cpu")
    assert resolved == "fp32" and "none of amx_bf16, avx512_bf16" in reason


def test_auto_on_cuda_follows_bf16_support(monkeypatch):
    monkeypatch.setattr(precision, "_cuda_bf16", lambda device: True)
    assert choose_precision("auto", "cuda") == ("bf16", "PREC auto: the GPU supports bf16")
    monkeypatch.setattr(precision, "_cuda_bf16", lambda device: False)
    assert choose_precision("auto", "cuda")[0] == "fp32"


def test_explicit_values_and_their_fallbacks(flags, caplog):
    flags()
    caplog.set_level(logging.INFO)
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("amp", "cpu") == "fp32" and '"amp" is not supported on CPU' in caplog.text
    assert resolve_precision("bf16", "cpu") == "bf16" and "slow here" in caplog.text  # honoured, with why
    assert resolve_precision("AUTO", "cpu") == "fp32"
    assert resolve_precision("amp", "cuda") == resolve_precision("fp16", "cuda") == "fp16"
    assert resolve_precision("bf16", "cuda") == "bf16"
    with pytest.raises(ValueError, match="TRAINER.COOP.PREC is 'fp64'; valid values: auto, fp32, fp16, amp, bf16"):
        check_precision("fp64", "TRAINER.COOP.PREC")
    assert build_grad_scaler("bf16", "cpu") is None and build_grad_scaler("fp32", "cpu") is None
    with autocast_context("bf16", "cpu"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_cpu_flags_are_read_from_cpuinfo(tmp_path, monkeypatch):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx512_bf16 amx_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    monkeypatch.setattr(precision, "CPUINFO", str(info))
    cpu_flags.cache_clear()
    try:
        assert {"avx512_bf16", "amx_bf16", "fpu"} <= cpu_flags()
        monkeypatch.setattr(precision, "CPUINFO", str(tmp_path / "absent"))
        cpu_flags.cache_clear()
        assert cpu_flags() == frozenset()
    finally:
        monkeypatch.undo()
        cpu_flags.cache_clear()


@TRAINER_REGISTRY.register()
class PrecisionProbeTrainer(EngineToyTrainer):
    """Records the precision the engine had resolved when build_model ran."""

    CFG_NODE = "PROBE"

    def build_model(self):
        self.precision_at_build = self.precision
        super().build_model()


def probe_cfg(root: str, output_dir: str, trainer: str, prec: str | None):
    cfg = get_cfg_default()
    if prec is not None:
        cfg.TRAINER.PROBE = CN()
        cfg.TRAINER.PROBE.PREC = prec
    cfg.merge_from_list(toy_opts() + ["DATASET.ROOT", root, "OUTPUT_DIR", output_dir, "TRAINER.NAME", trainer])
    cfg.freeze()
    return cfg


def test_the_engine_resolves_prec_before_the_model_is_built(toy_root, tmp_path, flags, caplog):  # noqa: F811
    caplog.set_level(logging.INFO)
    flags("amx_bf16")
    trainer = build_trainer(probe_cfg(toy_root, str(tmp_path / "a"), "PrecisionProbeTrainer", "auto"))
    assert trainer.precision_at_build == trainer.precision == "bf16"
    assert "Precision: bf16 (PREC auto: the CPU has amx_bf16)" in caplog.text
    flags()
    trainer = build_trainer(probe_cfg(toy_root, str(tmp_path / "b"), "PrecisionProbeTrainer", "auto"))
    assert trainer.precision_at_build == "fp32"
    with pytest.raises(ValueError, match="TRAINER.PROBE.PREC is 'half'"):
        build_trainer(probe_cfg(toy_root, str(tmp_path / "c"), "PrecisionProbeTrainer", "half"))


def test_a_trainer_without_a_prec_key_says_it_runs_fp32(toy_root, tmp_path, flags, caplog):  # noqa: F811
    caplog.set_level(logging.INFO)
    flags("amx_bf16")
    trainer = build_trainer(probe_cfg(toy_root, str(tmp_path), "EngineToyTrainer", None))
    assert trainer.precision == "fp32"
    assert "Precision: fp32 (no TRAINER.ENGINETOYTRAINER.PREC key" in caplog.text


def test_gopro_keeps_logits_losses_batchnorm_and_grads_fp32_under_bf16(tiny_clip_path):
    import clip
    from trainers.class_prompts import ClassPrompts, init_context
    from trainers.gopro import GOProNet, GOProPromptLearner

    torch.manual_seed(0)
    vit = clip.load(tiny_clip_path)
    learner = GOProPromptLearner(init_context(vit, 4, ""), vit.visual_layer_widths, vit.text_width, vit.embed_dim)
    net = GOProNet(vit, learner, ClassPrompts(vit, ["dog", "cat", "sea lion"], 4), projector_in_logits=True)
    g = torch.Generator().manual_seed(1)
    images = {k: torch.randn(4, 3, 32, 32, generator=g) for k in net.image_views}
    labels = torch.tensor([0, 2, 1, 2])
    with autocast_context("bf16", "cpu"):
        terms = net.losses(images, labels)
        logits = net.logits(images["img"])
    assert all(v.dtype == torch.float32 for v in terms.values()) and logits.dtype == torch.float32
    bn = learner.image_projector[1]
    assert bn.running_mean.dtype == bn.running_var.dtype == torch.float32 and bn.running_mean.abs().sum() > 0
    sum(v for k, v in terms.items() if k.startswith("loss")).backward()
    assert all(p.grad.dtype == torch.float32 for p in learner.parameters() if p.grad is not None)
    assert learner.ctx.grad.abs().sum() > 0


@pytest.mark.parametrize("resolved, device, turned_off", [("fp32", "cuda", True), ("fp32", "cuda:1", True),
                                                          ("bf16", "cuda", False), ("fp16", "cuda", False),
                                                          ("fp32", "cpu", False)])
def test_fp32_on_cuda_turns_tf32_off_and_nothing_else_touches_it(resolved, device, turned_off):
    # torch's default leaves TF32 on for cuDNN convolutions; the flags are settable without a GPU.
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        assert precision.ieee_fp32(resolved, device) is turned_off
        assert torch.backends.cuda.matmul.allow_tf32 is not turned_off
        assert torch.backends.cudnn.allow_tf32 is not turned_off
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
