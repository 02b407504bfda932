"""OpenAI-format checkpoints: read a file (TorchScript archive or state dict) and build the CLIP it holds."""
from __future__ import annotations

import logging
import warnings
import zipfile
from pathlib import Path

import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from torch import nn

from .blocks import causal_mask
from .errors import CheckpointFormatError
from .matmul_weights import is_matmul_weight

logger = logging.getLogger(__name__)

# OpenAI never stored head counts (its heads are always 64 wide); our own checkpoints add them, so
# that small test models with other head widths load back exactly.
TEXT_HEADS_KEY = "text_heads"
VISION_HEADS_KEY = "vision_heads"
_OPENAI_HEAD_WIDTH = 64
# Scalars OpenAI's TorchScript archives carry next to the weights; the architecture is read from shapes.
_NON_WEIGHT_KEYS = ("input_resolution", "context_length", "vocab_size")
_REQUIRED_KEYS = ("token_embedding.weight", "positional_embedding", "ln_final.weight", "text_projection")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The OpenAI-named tensors of a checkpoint file, on the CPU, in the dtype they were saved in."""
    path = Path(path)
    if _is_torchscript_archive(path):
        with warnings.catch_warnings():  # OpenAI ships TorchScript; torch's deprecation notice is not actionable here
            warnings.simplefilter("ignore", FutureWarning)
            state_dict = torch.jit.load(str(path), map_location="cpu").state_dict()
    else:
        try:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises several types for a file that is not a checkpoint
            raise CheckpointFormatError(
                f"Cannot read '{path}' as a CLIP checkpoint (TorchScript archive or state dict): {err}"
            ) from err
    if isinstance(state_dict, dict) and isinstance(state_dict.get("state_dict"), dict):
        state_dict = state_dict["state_dict"]  # training checkpoints wrap the weights
    if not isinstance(state_dict, dict):
        raise CheckpointFormatError(
            f"'{path}' holds a {type(state_dict).__name__}, expected a dict of tensors (a state dict)"
        )
    # DataParallel / DDP checkpoints prefix every key with "module.".
    state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    missing = [k for k in _REQUIRED_KEYS if k not in state_dict]
    if missing:
        raise CheckpointFormatError(
            f"'{path}' is not an OpenAI-format CLIP checkpoint: missing keys {missing} "
            f"(found e.g. {sorted(state_dict)[:5]})"
        )
    return state_dict


def build_clip_from_state_dict(
    state_dict: dict[str, torch.Tensor],
    source: str = "state dict",
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    matmul_dtype: torch.dtype | None = None,
) -> CLIP:
    """An open_clip `CLIP` (QuickGELU, eval mode) in `dtype` on `device`, architecture read from the shapes.

    The tensors are moved out of `state_dict` (it is left empty): the model is built without memory
    (meta device) and each tensor is converted and assigned in turn, so its source is freed at once and
    the peak is the model plus one tensor, never the checkpoint plus a randomly initialised copy.
    `matmul_dtype` (e.g. bf16 for a bf16-autocast run) is the dtype of the weights only matrix products read.
    """
    text_heads = _pop_int(state_dict, TEXT_HEADS_KEY)
    vision_heads = _pop_int(state_dict, VISION_HEADS_KEY)
    for key in _NON_WEIGHT_KEYS:
        state_dict.pop(key, None)

    vision_cfg = _vision_cfg(state_dict, vision_heads, source)
    text_cfg = _text_cfg(state_dict, text_heads, source)
    embed_dim = state_dict["text_projection"].shape[1]
    logger.debug("Building CLIP from %s: embed %d, vision %s, text %s", source, embed_dim, vision_cfg, text_cfg)
    with torch.device("meta"):
        model = CLIP(embed_dim, vision_cfg=vision_cfg, text_cfg=text_cfg, quick_gelu=True)
    expected = model.state_dict()
    if set(expected) != set(state_dict):
        raise CheckpointFormatError(
            f"The weights in {source} do not fit the architecture inferred from them: missing keys "
            f"{sorted(set(expected) - set(state_dict))[:5]}, unexpected keys {sorted(set(state_dict) - set(expected))[:5]}"
        )
    for key in list(state_dict):
        tensor = state_dict.pop(key)
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise CheckpointFormatError(
                f"The weights in {source} do not fit the architecture inferred from them: '{key}' has shape "
                f"{list(tensor.shape)}, expected {list(expected[key].shape)}"
            )
        module_name, _, name = key.rpartition(".")
        module = model.get_submodule(module_name)
        target = dtype if tensor.is_floating_point() else tensor.dtype
        if matmul_dtype is not None and is_matmul_weight(module, name):
            target = matmul_dtype
        _assign(module, name, tensor.to(device=device, dtype=target))
        del tensor  # the source (e.g. fp16) copy goes now, not after the whole model is built
    # Buffers outside the state dict are derived, not stored: the text tower's causal mask.
    model.attn_mask = causal_mask(text_cfg.context_length, device)
    still_empty = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if still_empty:
        raise RuntimeError(f"Building CLIP from {source} left tensors unset: {still_empty}")
    return model.eval()


def _assign(module: nn.Module, name: str, tensor: torch.Tensor) -> None:
    """Put `tensor` in place of `module`'s (meta) parameter or buffer `name`, without copying it."""
    if isinstance(getattr(module, name), nn.Parameter):
        tensor = nn.Parameter(tensor, requires_grad=getattr(module, name).requires_grad)
    setattr(module, name, tensor)


def _is_torchscript_archive(path: Path) -> bool:
    # torch.save also writes zip files; only TorchScript archives hold compiled constants.
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") for name in archive.namelist())


def _pop_int(weights: dict[str, torch.Tensor], key: str) -> int | None:
    value = weights.pop(key, None)
    return None if value is None else int(value)


def _heads_for(width: int, heads: int | None, tower: str, source: str) -> int:
    if heads is not None:
        return heads
    if width % _OPENAI_HEAD_WIDTH:
        raise CheckpointFormatError(
            f"Cannot infer the {tower} attention heads of {source}: width {width} is not a multiple of "
            f"{_OPENAI_HEAD_WIDTH} (OpenAI's head width). Save it with clip.tiny.save_openai_checkpoint, "
            f"which stores '{TEXT_HEADS_KEY}' and '{VISION_HEADS_KEY}'."
        )
    return width // _OPENAI_HEAD_WIDTH


def _count_blocks(weights: dict[str, torch.Tensor], prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in weights if k.startswith(prefix)})


def _vision_cfg(weights: dict[str, torch.Tensor], heads: int | None, source: str) -> CLIPVisionCfg:
    if "visual.proj" in weights:  # ViT
        width, _, patch_size, _ = weights["visual.conv1.weight"].shape
        tokens = weights["visual.positional_embedding"].shape[0]
        grid = round((tokens - 1) ** 0.5)
        mlp_width = weights["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
        return CLIPVisionCfg(
            layers=_count_blocks(weights, "visual.transformer.resblocks."),
            width=width,
            head_width=width // _heads_for(width, heads, "vision", source),
            mlp_ratio=mlp_width / width,
            patch_size=patch_size,
            image_size=patch_size * grid,
        )
    if "visual.attnpool.positional_embedding" in weights:  # ModifiedResNet
        width = weights["visual.layer1.0.conv1.weight"].shape[0]
        pooled_tokens, pooled_width = weights["visual.attnpool.positional_embedding"].shape
        # The attention pool sees the stem+4 stages' 32x downsampled grid plus one mean token.
        image_size = round((pooled_tokens - 1) ** 0.5) * 32
        return CLIPVisionCfg(
            layers=tuple(_count_blocks(weights, f"visual.layer{stage}.") for stage in (1, 2, 3, 4)),
            width=width,
            head_width=pooled_width // _heads_for(pooled_width, heads, "vision", source),
            image_size=image_size,
        )
    raise CheckpointFormatError(
        f"{source} has neither a ViT ('visual.proj') nor a ResNet ('visual.attnpool.*') image tower"
    )


def _text_cfg(weights: dict[str, torch.Tensor], heads: int | None, source: str) -> CLIPTextCfg:
    vocab_size, width = weights["token_embedding.weight"].shape
    mlp_width = weights["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
    return CLIPTextCfg(
        context_length=weights["positional_embedding"].shape[0],
        vocab_size=vocab_size,
        width=width,
        heads=_heads_for(width, heads, "text", source),
        layers=_count_blocks(weights, "transformer.resblocks."),
        mlp_ratio=mlp_width / width,
    )
