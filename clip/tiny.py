"""Small random CLIPs for tests and tools, and a writer that saves any CLIP in OpenAI's checkpoint format."""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from open_clip.modified_resnet import ModifiedResNet
from torch import nn

from .checkpoint import TEXT_HEADS_KEY, VISION_HEADS_KEY

_KINDS = ("vit", "resnet")


def build_tiny_clip(
    kind: str = "vit",
    embed_dim: int = 32,
    image_size: int = 32,
    vision_width: int | None = None,
    vision_layers: int | Sequence[int] | None = None,
    patch_size: int = 8,
    vision_heads: int = 2,
    text_width: int = 32,
    text_layers: int = 2,
    text_heads: int = 2,
    context_length: int = 77,
    vocab_size: int = 49408,
) -> CLIP:
    """A random open_clip `CLIP` with QuickGELU (as OpenAI's), in eval mode; ViT or ModifiedResNet image tower."""
    if kind == "vit":
        width = vision_width or 48
        vision_cfg = CLIPVisionCfg(
            layers=vision_layers or 2, width=width, head_width=width // vision_heads,
            patch_size=patch_size, image_size=image_size,
        )
    elif kind == "resnet":
        width = vision_width or 8
        # The attention pool works on the last stage, whose channel count is 32x the stem width.
        vision_cfg = CLIPVisionCfg(
            layers=tuple(vision_layers or (1, 1, 1, 1)), width=width,
            head_width=width * 32 // vision_heads, image_size=image_size,
        )
    else:
        raise ValueError(f"Unknown tiny CLIP kind '{kind}'; expected one of {_KINDS}")
    text_cfg = CLIPTextCfg(
        context_length=context_length, vocab_size=vocab_size, width=text_width, heads=text_heads, layers=text_layers,
    )
    return CLIP(embed_dim, vision_cfg=vision_cfg, text_cfg=text_cfg, quick_gelu=True).eval()


def random_vit_b16() -> CLIP:
    """A randomly initialised CLIP with OpenAI ViT-B/16's dimensions (no weights needed; for benchmarks)."""
    return CLIP(
        512,
        vision_cfg=CLIPVisionCfg(layers=12, width=768, patch_size=16, image_size=224),
        text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=512, heads=8, layers=12),
        quick_gelu=True,
    ).eval()


def random_token_ids(eot_positions: list[int], length: int = 77, seed: int = 0) -> torch.Tensor:
    """Token ids for tests: SOT, random words, EOT at the given positions, zero padding after."""
    sot, eot_id = 49406, 49407  # the BPE vocabulary's start and end tokens (EOT is the largest id)
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(len(eot_positions), length, dtype=torch.long)
    for row, eot in enumerate(eot_positions):
        ids[row, 0] = sot
        ids[row, 1:eot] = torch.randint(1, sot, (eot - 1,), generator=g)
        ids[row, eot] = eot_id
    return ids


def openai_state_dict(model: nn.Module, half: bool = False) -> dict[str, torch.Tensor]:
    """`model`'s weights under OpenAI's key names, plus the head counts OpenAI's format leaves implicit."""
    # open_clip's CLIP (and clip.CLIPBackbone) already use OpenAI's names for every persistent tensor.
    state_dict = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    if half:
        state_dict = {k: v.half() if v.is_floating_point() else v for k, v in state_dict.items()}
    visual = model.visual
    heads = visual.attnpool.num_heads if isinstance(visual, ModifiedResNet) else \
        visual.transformer.resblocks[0].attn.num_heads
    state_dict[VISION_HEADS_KEY] = torch.tensor(heads)
    state_dict[TEXT_HEADS_KEY] = torch.tensor(model.transformer.resblocks[0].attn.num_heads)
    return state_dict


def save_openai_checkpoint(model: nn.Module, path: str | Path, jit: bool = False, half: bool = False) -> None:
    """Write `model` in OpenAI's format: a state dict, or (`jit=True`) a TorchScript archive holding one.

    `half=True` stores fp16 tensors, as OpenAI's files do; head counts are stored too (see clip.checkpoint).
    """
    state_dict = openai_state_dict(model, half=half)
    if jit:
        with warnings.catch_warnings():  # TorchScript is deprecated, but it is the format OpenAI shipped
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.save(torch.jit.script(_tensor_tree(state_dict)), str(path))
    else:
        torch.save(state_dict, str(path))


class _TensorHolder(nn.Module):
    """A module that only holds tensors, so a nested tree of them reproduces dotted state-dict keys."""

    def forward(self) -> None:
        return None


def _tensor_tree(state_dict: dict[str, torch.Tensor]) -> nn.Module:
    root = _TensorHolder()
    for key, tensor in state_dict.items():
        *parents, leaf = key.split(".")
        node = root
        for name in parents:
            if not hasattr(node, name):
                node.add_module(name, _TensorHolder())
            node = getattr(node, name)
        node.register_buffer(leaf, tensor)
    return root
