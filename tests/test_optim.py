"""dassl.optim: optimizer choice, staged LR, LR sequences and scheduler state round-trips."""
import io

import pytest
import torch
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR

from dassl.config import ConfigError, get_cfg_default
from dassl.optim import ConstantWarmupScheduler, build_lr_scheduler, build_optimizer


def _optim_cfg(**overrides):
    cfg = get_cfg_default().OPTIM
    cfg.NAME = "sgd"
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def _lr_sequence(optimizer, scheduler, epochs):
    """The LR each epoch trains with; the scheduler steps once at the end of each epoch."""
    lrs = []
    for _ in range(epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def _cosine_warmup(lr, max_epoch):
    return _optim_cfg(LR=lr, MAX_EPOCH=max_epoch, LR_SCHEDULER="cosine", WARMUP_EPOCH=1, WARMUP_TYPE="constant")


def test_maple_lr_sequence():
    cfg = _cosine_warmup(0.0035, 5)
    optimizer = build_optimizer(nn.Linear(2, 2), cfg)
    lrs = _lr_sequence(optimizer, build_lr_scheduler(optimizer, cfg), 5)
    assert lrs == pytest.approx([1e-5, 3.5e-3, 3.1658e-3, 2.2908e-3, 1.2092e-3], rel=1e-4)


def test_cocoop_lr_sequence():
    cfg = _cosine_warmup(0.002, 10)
    optimizer = build_optimizer(nn.Linear(2, 2), cfg)
    expected = [1e-5, 2e-3, 1.9511e-3, 1.8090e-3, 1.5878e-3, 1.3090e-3, 1e-3, 6.9098e-4, 4.1221e-4, 1.9098e-4]
    assert _lr_sequence(optimizer, build_lr_scheduler(optimizer, cfg), 10) == pytest.approx(expected, rel=1e-4)


def test_linear_warmup_and_step_schedulers():
    cfg = _optim_cfg(LR=0.1, MAX_EPOCH=6, LR_SCHEDULER="multi_step", STEPSIZE=(2,), WARMUP_EPOCH=2)
    # WARMUP_RECOUNT: the successor counts from 0 when warm-up ends, so milestone 2 is epoch 4.
    optimizer = build_optimizer(nn.Linear(2, 2), cfg)
    lrs = _lr_sequence(optimizer, build_lr_scheduler(optimizer, cfg), 6)
    assert lrs == pytest.approx([1e-5, 0.05, 0.1, 0.1, 0.01, 0.01])
    # single_step with the default STEPSIZE (-1,) decays only at MAX_EPOCH: constant in training.
    cfg = _optim_cfg(LR=0.1, MAX_EPOCH=4)
    optimizer = build_optimizer(nn.Linear(2, 2), cfg)
    assert _lr_sequence(optimizer, build_lr_scheduler(optimizer, cfg), 4) == pytest.approx([0.1] * 4)


def _save_load(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def test_scheduler_state_round_trip_keeps_lr_moving():
    cfg = _cosine_warmup(0.0035, 5)
    model = nn.Linear(2, 2)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_lr_scheduler(optimizer, cfg)
    _lr_sequence(optimizer, scheduler, 2)
    state = _save_load({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()})
    assert "successor" not in state["scheduler"]  # state, not a pickled object

    # "Resume": fresh objects, load, continue; the LR must keep following the cosine.
    resumed_opt = build_optimizer(model, cfg)
    resumed_sched = build_lr_scheduler(resumed_opt, cfg)
    resumed_opt.load_state_dict(state["optimizer"])
    resumed_sched.load_state_dict(state["scheduler"])
    assert _lr_sequence(resumed_opt, resumed_sched, 3) == pytest.approx([3.1658e-3, 2.2908e-3, 1.2092e-3], rel=1e-4)


def test_loads_upstream_state_with_pickled_successor():
    cfg = _cosine_warmup(0.0035, 5)
    model = nn.Linear(2, 2)
    old_opt = build_optimizer(model, cfg)
    old_sched = build_lr_scheduler(old_opt, cfg)
    _lr_sequence(old_opt, old_sched, 2)
    # Upstream Dassl's state_dict: the wrapper's __dict__ with the successor object itself.
    upstream_state = {k: v for k, v in old_sched.__dict__.items() if k != "optimizer"}
    assert isinstance(upstream_state["successor"], CosineAnnealingLR)
    upstream_state = _save_load(upstream_state)

    new_opt = build_optimizer(model, cfg)
    new_sched = build_lr_scheduler(new_opt, cfg)
    new_opt.load_state_dict(old_opt.state_dict())
    new_sched.load_state_dict(upstream_state)
    assert isinstance(new_sched, ConstantWarmupScheduler)
    assert new_sched.successor.optimizer is new_opt  # not the stale unpickled one
    assert _lr_sequence(new_opt, new_sched, 3) == pytest.approx([3.1658e-3, 2.2908e-3, 1.2092e-3], rel=1e-4)


class _TwoPart(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(2, 2)
        self.head = nn.Linear(2, 2)


def test_optimizers_and_staged_lr():
    model = _TwoPart()
    model.backbone.requires_grad_(False)
    for name, cls in [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW),
                      ("rmsprop", torch.optim.RMSprop), ("radam", torch.optim.RAdam)]:
        optimizer = build_optimizer(model, _optim_cfg(NAME=name))
        assert type(optimizer) is cls
        assert len(optimizer.param_groups[0]["params"]) == 4  # frozen parameters included, as upstream
    assert build_optimizer(model, _optim_cfg(NAME="amsgrad")).param_groups[0]["amsgrad"] is True

    staged = build_optimizer(model, _optim_cfg(LR=0.1, STAGED_LR=True, NEW_LAYERS=("head",), BASE_LR_MULT=0.1))
    base_group, new_group = staged.param_groups
    assert base_group["lr"] == pytest.approx(0.01) and new_group["lr"] == pytest.approx(0.1)
    assert new_group["params"][0] is model.head.weight
    with pytest.raises(ConfigError, match="neck"):
        build_optimizer(model, _optim_cfg(STAGED_LR=True, NEW_LAYERS=("neck",)))


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"NAME": "lamb"}, r"lamb.*'adam', 'amsgrad', 'sgd'"),
        ({"LR_SCHEDULER": "poly"}, r"poly.*'single_step', 'multi_step', 'cosine'"),
        ({"WARMUP_EPOCH": 1, "WARMUP_TYPE": "exp"}, r"exp.*'constant', 'linear'"),
        ({"LR_SCHEDULER": "single_step", "STEPSIZE": (1.5,)}, r"OPTIM.STEPSIZE is 1.5; valid for single_step"),
        ({"LR_SCHEDULER": "multi_step", "STEPSIZE": 3}, r"OPTIM.STEPSIZE is 3; valid for multi_step: a list"),
    ],
)
def test_unknown_names_and_bad_step_sizes_are_config_errors(overrides, match):
    cfg = _optim_cfg(**overrides)
    with pytest.raises(ConfigError, match=match):
        optimizer = build_optimizer(nn.Linear(2, 2), cfg)
        build_lr_scheduler(optimizer, cfg)
