"""Which of a CLIP's weights only matrix products read: the ones low-precision autocast rounds at every call.

Keeping exactly these in bf16 gives the numbers that fp32 weights give under bf16 autocast (see
`CLIPBackbone.store_matmul_weights`); norms, embeddings and scales are read by fp32 ops and stay fp32.
"""
from __future__ import annotations

from torch import nn

_MHA_WEIGHTS = ("in_proj_weight", "in_proj_bias", "q_proj_weight", "k_proj_weight", "v_proj_weight")
# The two output projections, held as bare matrices (`x @ proj`) by OpenAI's and open_clip's towers.
_PROJECTIONS = ("proj", "text_projection")


def is_matmul_weight(module: nn.Module, name: str) -> bool:
    """Whether `module`'s own parameter `name` reaches only matrix products (linear, conv, projections)."""
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        return name in ("weight", "bias")
    if isinstance(module, nn.MultiheadAttention):
        return name in _MHA_WEIGHTS
    param = module._parameters.get(name)
    return name in _PROJECTIONS and param is not None and param.ndim == 2
