"""``build_optimizer``: a torch optimizer from the ``OPTIM`` config node."""
from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from torch import nn

from dassl.utils.errors import ConfigError

__all__ = ["AVAILABLE_OPTIMIZERS", "build_optimizer"]

logger = logging.getLogger(__name__)

AVAILABLE_OPTIMIZERS = ["adam", "amsgrad", "sgd", "rmsprop", "radam", "adamw"]


def _staged_param_groups(model: nn.Module, new_layers, lr: float, base_lr_mult: float) -> list[dict]:
    """Children named in ``new_layers`` train at ``lr``, every other child at ``lr * base_lr_mult``."""
    if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        model = model.module
    if not new_layers:
        raise ConfigError("OPTIM.STAGED_LR is set but OPTIM.NEW_LAYERS is empty; name the model's new children there")
    new_layers = [new_layers] if isinstance(new_layers, str) else list(new_layers)
    children = [name for name, _ in model.named_children()]
    unknown = [name for name in new_layers if name not in children]
    if unknown:
        raise ConfigError(f"OPTIM.NEW_LAYERS names {unknown}, which are not children of the model; valid: {children}")
    new_params, base_params = [], []
    for name, module in model.named_children():
        (new_params if name in new_layers else base_params).extend(module.parameters())
    return [{"params": base_params, "lr": lr * base_lr_mult}, {"params": new_params}]


def build_optimizer(model: nn.Module | Iterable, optim_cfg, param_groups: list | None = None) -> torch.optim.Optimizer:
    """Build the optimizer named by ``optim_cfg.NAME`` over ``model`` (a module or an iterable of params).

    Frozen parameters are included, as upstream; they are skipped at step time because their grad is None.
    """
    name = optim_cfg.NAME
    if name not in AVAILABLE_OPTIMIZERS:
        raise ConfigError(f'Unknown optimizer OPTIM.NAME "{name}"; valid choices: {AVAILABLE_OPTIMIZERS}')
    lr = optim_cfg.LR
    betas = (optim_cfg.ADAM_BETA1, optim_cfg.ADAM_BETA2)

    if param_groups is not None:
        if optim_cfg.STAGED_LR:
            logger.warning("param_groups were given, so OPTIM.STAGED_LR is ignored")
        params = param_groups
    elif optim_cfg.STAGED_LR:
        if not isinstance(model, nn.Module):
            raise TypeError("OPTIM.STAGED_LR needs an nn.Module, not an iterable of parameters")
        params = _staged_param_groups(model, optim_cfg.NEW_LAYERS, lr, optim_cfg.BASE_LR_MULT)
    else:
        params = model.parameters() if isinstance(model, nn.Module) else model

    wd = optim_cfg.WEIGHT_DECAY
    if name == "sgd":
        return torch.optim.SGD(
            params,
            lr=lr,
            momentum=optim_cfg.MOMENTUM,
            weight_decay=wd,
            dampening=optim_cfg.SGD_DAMPNING,
            nesterov=optim_cfg.SGD_NESTEROV,
        )
    if name in ("adam", "amsgrad"):
        return torch.optim.Adam(params, lr=lr, weight_decay=wd, betas=betas, amsgrad=name == "amsgrad")
    if name == "rmsprop":
        return torch.optim.RMSprop(
            params, lr=lr, momentum=optim_cfg.MOMENTUM, weight_decay=wd, alpha=optim_cfg.RMSPROP_ALPHA
        )
    if name == "radam":
        return torch.optim.RAdam(params, lr=lr, weight_decay=wd, betas=betas)
    return torch.optim.AdamW(params, lr=lr, weight_decay=wd, betas=betas)
