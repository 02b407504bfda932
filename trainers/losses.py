"""GOPro's extra losses: SimCLR (NT-Xent) between two image views and prompt consistency across views."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributed.nn.functional import all_gather

from dassl.utils.distributed import get_rank, is_distributed

__all__ = ["simclr_loss", "consistency_loss", "gather_with_grad"]


def gather_with_grad(x: Tensor) -> tuple[Tensor, int]:
    """All ranks' rows of ``x`` concatenated (gradients flow back to every rank) and this rank's offset."""
    if not is_distributed():
        return x, 0
    return torch.cat(all_gather(x), dim=0), get_rank() * x.shape[0]


def simclr_loss(z_a: Tensor, z_b: Tensor, temperature: float) -> Tensor:
    """Symmetric NT-Xent over two views [B, E]: positives across views, negatives from both views.

    For each anchor the candidates are every other-view embedding and every same-view embedding
    except itself; negatives come from all DDP ranks.
    """
    z_a = F.normalize(z_a.float(), dim=-1)
    z_b = F.normalize(z_b.float(), dim=-1)
    all_a, offset = gather_with_grad(z_a)
    all_b, _ = gather_with_grad(z_b)
    targets = torch.arange(z_a.shape[0], device=z_a.device) + offset
    self_mask = F.one_hot(targets, all_a.shape[0]).bool()

    def one_direction(anchor: Tensor, same_view: Tensor, other_view: Tensor) -> Tensor:
        cross = anchor @ other_view.t() / temperature
        same = (anchor @ same_view.t() / temperature).masked_fill(self_mask, float("-inf"))
        return F.cross_entropy(torch.cat([cross, same], dim=1), targets)

    return 0.5 * (one_direction(z_a, all_a, all_b) + one_direction(z_b, all_b, all_a))


def consistency_loss(anchor: Tensor, others: Sequence[Tensor]) -> Tensor:
    """Sum over extra views of the mean squared difference to the anchor's text features."""
    return sum((F.mse_loss(anchor, other) for other in others), anchor.new_zeros(()))
