"""Image towers run by one loop per kind, yielding the final feature, optionally every layer, and taking prompts."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from open_clip.modified_resnet import ModifiedResNet
from open_clip.transformer import VisionTransformer
from torch import nn

from .blocks import SequenceFirstTransformer, attention_block, replace_rows
from .errors import UnsupportedBackboneError


@dataclass(frozen=True)
class VisionPrompts:
    """Learned tokens for a ViT image tower (each [n, width] shared by the batch, or [B, n, width]).

    `shallow` is appended after the class and patch tokens, after the positional embedding and before `ln_pre`;
    `deep[i]` replaces those last n tokens before block i+1. Prompt depth = 1 + len(deep).
    """

    shallow: torch.Tensor
    deep: Sequence[torch.Tensor] = ()

    @property
    def depth(self) -> int:
        return 1 + len(self.deep)


class ViTTower(nn.Module):
    """An open_clip ViT's weights under OpenAI's `VisionTransformer` names, run by `encode_vit`.

    `transformer` behaves as OpenAI's (sequence-first); `forward(images)` is the frozen CLIP feature.
    """

    def __init__(self, vit: VisionTransformer) -> None:
        super().__init__()
        if getattr(vit, "attn_pool", None) is not None or vit.pool_type not in ("tok", "avg"):
            raise UnsupportedBackboneError(
                f"Unsupported ViT pooling (pool_type={vit.pool_type!r}, attentional pool set: "
                f"{getattr(vit, 'attn_pool', None) is not None}); "
                "supported: pool_type 'tok' or 'avg', no attention pool"
            )
        self.conv1 = vit.conv1
        self.class_embedding = vit.class_embedding
        self.positional_embedding = vit.positional_embedding
        self.ln_pre = vit.ln_pre  # patch dropout is skipped: the frozen tower is always in eval mode
        self.transformer = SequenceFirstTransformer(vit.transformer.resblocks, causal=False)
        self.ln_post = vit.ln_post
        self.proj = vit.proj
        self.pool_type = vit.pool_type
        self.final_ln_after_pool = vit.final_ln_after_pool
        self.image_size = vit.image_size
        self.input_resolution = vit.image_size[0]  # OpenAI's name
        self.output_dim = vit.output_dim

    @property
    def width(self) -> int:
        return self.transformer.width

    def forward(self, images: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if args or kwargs:
            raise TypeError(
                "visual(images) takes only images; vision prompts go through "
                "CLIPBackbone.encode_image(images, prompts=VisionPrompts(shallow, deep))"
            )
        return encode_vit(self, images)[0]


def visual_kind(visual: nn.Module) -> str:
    """'vit' or 'resnet'; raises for image towers whose layers we cannot read out exactly."""
    if isinstance(visual, ModifiedResNet):
        return "resnet"
    if isinstance(visual, ViTTower):
        return "vit"
    raise UnsupportedBackboneError(
        f"Unsupported image tower {type(visual).__name__}; supported: open_clip VisionTransformer or ModifiedResNet"
    )


def wrap_visual(visual: nn.Module) -> nn.Module:
    """The tower `CLIPBackbone` keeps: a ViT becomes a `ViTTower`; a ResNet stays, with OpenAI's attribute names."""
    if isinstance(visual, VisionTransformer):
        return ViTTower(visual)
    if isinstance(visual, ModifiedResNet):
        visual.input_resolution = visual.image_size
        return visual
    raise UnsupportedBackboneError(
        f"Unsupported image tower {type(visual).__name__}; supported: open_clip VisionTransformer or ModifiedResNet"
    )


def layer_widths(visual: nn.Module) -> list[int]:
    """One width per layer output of `forward_with_layers` (ViT: block width; ResNet: stage channels)."""
    if isinstance(visual, ModifiedResNet):
        return [stage[-1].bn3.num_features for stage in (visual.layer1, visual.layer2, visual.layer3, visual.layer4)]
    return [visual.width] * visual.transformer.layers


def forward_with_layers(
    visual: nn.Module, images: torch.Tensor, prompts: VisionPrompts | None = None, keep_layers: bool = True
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(features [B, embed_dim], layers) for a `ViTTower` or ModifiedResNet in one pass; layers empty unless kept."""
    if isinstance(visual, ModifiedResNet):
        if prompts is not None:
            raise ValueError("vision prompts need a ViT image tower; this backbone's is a ResNet (valid: ViT-*)")
        return _resnet_with_layers(visual, images, keep_layers)
    return encode_vit(visual, images, prompts, keep_layers)


def check_vision_prompts(vit: ViTTower, prompts: VisionPrompts, batch: int) -> int:
    """The number of prompt tokens n, after checking depth, shapes and pooling."""
    blocks, width = vit.transformer.layers, vit.width
    if prompts.depth > blocks:
        raise ValueError(
            f"vision prompt depth {prompts.depth} (1 shallow + {len(prompts.deep)} deep) exceeds the image "
            f"tower's {blocks} blocks; valid depths: 1..{blocks}"
        )
    if vit.pool_type != "tok":
        raise ValueError(f"vision prompts need class-token pooling; this ViT pools with {vit.pool_type!r}")
    n_tokens = prompts.shallow.shape[-2] if prompts.shallow.dim() >= 2 else 0
    for name, prompt in [("shallow", prompts.shallow), *((f"deep[{i}]", p) for i, p in enumerate(prompts.deep))]:
        if prompt.shape not in ((n_tokens, width), (batch, n_tokens, width)) or n_tokens < 1:
            raise ValueError(
                f"VisionPrompts.{name} has shape {list(prompt.shape)}; expected [n, {width}] or "
                f"[{batch}, n, {width}] with the same n >= 1 everywhere (n = {n_tokens} from shallow)"
            )
    return n_tokens


def encode_vit(
    vit: ViTTower, images: torch.Tensor, prompts: VisionPrompts | None = None, keep_layers: bool = False
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The one ViT block loop: (features [B, embed_dim], per-block tokens [B, T, width] if `keep_layers`).

    With prompts, T = 1 + patches + n and the prompt tokens are the last n (vision attention has no mask, so
    their place in the sequence changes nothing read at the class token).
    """
    batch = images.shape[0]
    n_tokens = 0 if prompts is None else check_vision_prompts(vit, prompts, batch)
    x = vit.conv1(images)  # [B, width, grid, grid]
    x = x.flatten(2).transpose(1, 2)  # [B, grid*grid, width]
    cls = vit.class_embedding.to(x.dtype).expand(batch, 1, -1)
    x = torch.cat([cls, x], dim=1) + vit.positional_embedding.to(x.dtype)  # [B, 1+grid*grid, width]
    if prompts is not None:
        shallow = prompts.shallow.to(x.dtype).expand(batch, n_tokens, x.shape[2])
        x = torch.cat([x, shallow], dim=1)  # no positional embedding, but through ln_pre
    x = vit.ln_pre(x)

    deep = () if prompts is None else prompts.deep
    first_prompt = x.shape[1] - n_tokens
    layers = []
    for layer, block in enumerate(vit.transformer.resblocks):
        if 1 <= layer <= len(deep):
            x = replace_rows(x, first_prompt, deep[layer - 1])
        x = attention_block(block, x, causal=False)
        if keep_layers:
            layers.append(x)

    if vit.pool_type == "avg" and not vit.final_ln_after_pool:
        pooled = vit.ln_post(x[:, 1:]).mean(dim=1)
    else:
        # LayerNorm is per token, so normalising only the pooled token is exact.
        pooled = vit.ln_post(x[:, 1:].mean(dim=1) if vit.pool_type == "avg" else x[:, 0])
    if vit.proj is not None:
        pooled = pooled @ vit.proj
    return pooled, layers


def _resnet_with_layers(
    resnet: ModifiedResNet, images: torch.Tensor, keep_layers: bool
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    x = resnet.stem(images)
    layers = []
    for stage in (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4):
        x = stage(x)
        if keep_layers:
            layers.append(x)  # [B, C, H, W]
    return resnet.attnpool(x), layers
