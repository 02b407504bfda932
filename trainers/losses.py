"""GOPro's extra losses: SimCLR (NT-Xent) between two image views and prompt consistency across views."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["simclr_loss", "consistency_loss"]


def simclr_loss(z_a: Tensor, z_b: Tensor, temperature: float) -> Tensor:
    """Symmetric NT-Xent over two views [B, E]: positives across views, negatives from both views.

    For each anchor the candidates are every other-view embedding and every same-view embedding
    except itself. Under DDP the caller passes the whole global batch (see GOPro's projector).
    """
    z_a = F.normalize(z_a.float(), dim=-1)
    z_b = F.normalize(z_b.float(), dim=-1)
    targets = torch.arange(z_a.shape[0], device=z_a.device)
    self_mask = torch.eye(z_a.shape[0], dtype=torch.bool, device=z_a.device)

    def one_direction(anchor: Tensor, other_view: Tensor) -> Tensor:
        cross = anchor @ other_view.t() / temperature
        same = (anchor @ anchor.t() / temperature).masked_fill(self_mask, float("-inf"))
        return F.cross_entropy(torch.cat([cross, same], dim=1), targets)

    return 0.5 * (one_direction(z_a, z_b) + one_direction(z_b, z_a))


def consistency_loss(anchor: Tensor, others: Sequence[Tensor]) -> Tensor:
    """Sum over extra views of the mean squared difference to the anchor's text features."""
    return sum((F.mse_loss(anchor, other) for other in others), anchor.new_zeros(()))
