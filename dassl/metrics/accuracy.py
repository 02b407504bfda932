"""Top-k accuracy in percent."""
from __future__ import annotations

import torch

__all__ = ["compute_accuracy"]


def compute_accuracy(output, target: torch.Tensor, topk: tuple[int, ...] = (1,)) -> list[torch.Tensor]:
    """One 1-element tensor per k: 100 * (share of rows whose target is among the top-k logits).

    ``output`` may be a tuple or list, in which case its first element holds the logits.
    """
    if isinstance(output, (tuple, list)):
        output = output[0]
    maxk = max(topk)
    batch_size = target.size(0)
    _, pred = output.topk(maxk, dim=1, largest=True, sorted=True)  # [B, maxk]
    correct = pred.t().eq(target.view(1, -1).expand(maxk, -1))  # [maxk, B]
    return [correct[:k].reshape(-1).float().sum(0, keepdim=True).mul_(100.0 / batch_size) for k in topk]
