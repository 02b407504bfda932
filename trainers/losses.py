"""Logits and loss terms the methods share: fp32 cosine logits, cross-entropy, SimCLR, prompt consistency."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["cosine_logits", "classification_terms", "simclr_loss", "consistency_loss"]


def cosine_logits(logit_scale: Tensor, image_features: Tensor, text_features: Tensor) -> Tensor:
    """CLIP logits exp(logit_scale)·<f, t> in fp32 even under autocast (bf16 would round them to ~0.1).

    ``text_features`` is [C, E] (shared by all images) or [B, C, E] (one set per image).
    """
    with torch.autocast(image_features.device.type, enabled=False):
        f, t = image_features.float(), text_features.float()
        similarity = f @ t.t() if t.dim() == 2 else torch.einsum("be,bce->bc", f, t)
        return logit_scale.float().exp() * similarity


def classification_terms(logits: Tensor, labels: Tensor) -> dict[str, Tensor]:
    """Cross-entropy loss and batch accuracy (%) in the engine's named-loss form (fp32 whatever the autocast)."""
    acc = (logits.argmax(dim=-1) == labels).float().mean().detach() * 100.0
    return {"loss_ce": F.cross_entropy(logits.float(), labels), "acc": acc}


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
