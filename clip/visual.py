"""Image towers run piece by piece, so one pass yields the final feature and every layer's output."""
from __future__ import annotations

import torch
from open_clip.modified_resnet import ModifiedResNet
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer
from torch import nn


def visual_kind(visual: nn.Module) -> str:
    """'vit' or 'resnet'; raises for image towers whose layers we cannot read out exactly."""
    if isinstance(visual, ModifiedResNet):
        return "resnet"
    if isinstance(visual, VisionTransformer):
        if getattr(visual, "attn_pool", None) is not None or visual.pool_type not in ("tok", "avg"):
            raise ValueError(
                f"Unsupported ViT pooling (pool_type={visual.pool_type!r}, attentional pool set: "
                f"{getattr(visual, 'attn_pool', None) is not None}); "
                "supported: pool_type 'tok' or 'avg', no attention pool"
            )
        if not all(isinstance(b, ResidualAttentionBlock) for b in visual.transformer.resblocks):
            raise ValueError("Unsupported ViT blocks: only open_clip's standard ResidualAttentionBlock is supported")
        return "vit"
    raise ValueError(
        f"Unsupported image tower {type(visual).__name__}; supported: open_clip VisionTransformer or ModifiedResNet"
    )


def layer_widths(visual: nn.Module) -> list[int]:
    """One width per layer output of `forward_with_layers` (ViT: block width; ResNet: stage channels)."""
    if isinstance(visual, ModifiedResNet):
        return [stage[-1].bn3.num_features for stage in (visual.layer1, visual.layer2, visual.layer3, visual.layer4)]
    return [visual.transformer.width] * len(visual.transformer.resblocks)


def forward_with_layers(visual: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(features [B, embed_dim], layers) for an open_clip ViT or ModifiedResNet, in one pass."""
    if isinstance(visual, ModifiedResNet):
        return _resnet_with_layers(visual, images)
    return _vit_with_layers(visual, images)


def _vit_with_layers(vit: VisionTransformer, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    x = vit.conv1(images)  # [B, width, grid, grid]
    x = x.flatten(2).transpose(1, 2)  # [B, grid*grid, width]
    cls = vit.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + vit.positional_embedding.to(x.dtype)  # [B, T, width]
    x = vit.ln_pre(vit.patch_dropout(x))

    # Blocks built with batch_first=False expect [T, B, width]; run them in their own layout.
    batch_first = vit.transformer.batch_first
    if not batch_first:
        x = x.transpose(0, 1)
    layers = []
    for block in vit.transformer.resblocks:
        x = block(x)
        layers.append(x if batch_first else x.transpose(0, 1))
    x = layers[-1]

    if vit.pool_type == "avg" and not vit.final_ln_after_pool:
        pooled = vit.ln_post(x[:, 1:]).mean(dim=1)
    else:
        # LayerNorm is per token, so normalising only the pooled token is exact.
        pooled = vit.ln_post(x[:, 1:].mean(dim=1) if vit.pool_type == "avg" else x[:, 0])
    if vit.proj is not None:
        pooled = pooled @ vit.proj
    return pooled, layers


def _resnet_with_layers(resnet: ModifiedResNet, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    x = resnet.stem(images)
    layers = []
    for stage in (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4):
        x = stage(x)
        layers.append(x)  # [B, C, H, W]
    return resnet.attnpool(x), layers
