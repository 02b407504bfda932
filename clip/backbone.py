"""CLIPBackbone: the frozen CLIP that trainers use, with per-layer image features and shallow/deep prompt hooks."""
from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import nn

from . import text as text_tower
from . import visual as visual_tower
from .blocks import SequenceFirstTransformer, causal_mask
from .matmul_weights import is_matmul_weight
from .visual import VisionPrompts


class CLIPBackbone(nn.Module):
    """A frozen open_clip CLIP under OpenAI's attribute names; every size is read from the weights.

    `transformer` and `visual.transformer` behave as OpenAI's (sequence-first [L, N, width], masks inside; the
    text tower's L is the context length, as OpenAI's fixed mask requires), so code written against OpenAI CLIP
    computes the same features as `encode_text` / `encode_image`, and code that would fail there fails here.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        # open_clip's CLIP keeps the text pieces on itself, CustomTextCLIP on `.text`.
        text = getattr(model, "text", model)
        text_tower.check_text_tower(text)
        self.visual = visual_tower.wrap_visual(model.visual)
        self.visual_kind = visual_tower.visual_kind(self.visual)
        self.transformer = SequenceFirstTransformer(
            text.transformer.resblocks, causal=True, context_length=text.positional_embedding.shape[0]
        )
        self.token_embedding = text.token_embedding
        self.positional_embedding = text.positional_embedding
        self.ln_final = text.ln_final
        self.text_projection = text.text_projection
        self.logit_scale = model.logit_scale
        # Recompute text-block activations in backward (less memory, ~1/3 more text time); set by trainers.
        self.text_checkpointing = False
        # Set by `store_matmul_weights`: the dtype of the weights that only matrix products read.
        self.matmul_dtype: torch.dtype | None = None
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> CLIPBackbone:
        # The backbone stays in eval mode (BatchNorm statistics, dropout) even inside a training model.
        return super().train(False)

    @property
    def dtype(self) -> torch.dtype:
        return self.positional_embedding.dtype

    @property
    def embed_dim(self) -> int:
        projection = self.text_projection
        return projection.out_features if isinstance(projection, nn.Linear) else projection.shape[1]

    @property
    def text_width(self) -> int:
        return self.token_embedding.embedding_dim

    @property
    def text_layers(self) -> int:
        """Blocks of the text tower: the largest text prompt depth."""
        return self.transformer.layers

    @property
    def vision_width(self) -> int:
        """Token width of a ViT image tower (the vision prompts' width); ValueError for a ResNet."""
        self._require_vit("vision_width")
        return self.visual.width

    @property
    def vision_layers(self) -> int:
        """Blocks of a ViT image tower: the largest vision prompt depth; ValueError for a ResNet."""
        self._require_vit("vision_layers")
        return self.visual.transformer.layers

    @property
    def context_length(self) -> int:
        return self.positional_embedding.shape[0]

    @property
    def vocab_size(self) -> int:
        return self.token_embedding.num_embeddings

    @property
    def image_size(self) -> int:
        size = self.visual.image_size
        return size if isinstance(size, int) else size[0]

    @property
    def visual_layer_widths(self) -> list[int]:
        return visual_tower.layer_widths(self.visual)

    def build_attention_mask(self) -> torch.Tensor:
        """OpenAI's additive causal mask [context_length, context_length] of the text tower."""
        return causal_mask(self.context_length, self.positional_embedding.device)

    def store_matmul_weights(self, dtype: torch.dtype) -> int:
        """Keep the weights that only matrix products read (linear, conv, projections) in `dtype`; bytes freed.

        Under `torch.autocast(dtype=dtype)` this computes exactly what fp32 weights do, since autocast rounds
        those operands to `dtype` at every call anyway; it halves their memory and drops the per-call casts.
        Norms, embeddings and the logit scale stay fp32. The towers then always run under that autocast.
        """
        replaced: dict[int, nn.Parameter] = {}
        freed = 0
        for module in self.modules():
            for name, param in list(module._parameters.items()):
                if param is None or param.dtype == dtype or not is_matmul_weight(module, name):
                    continue
                if id(param) not in replaced:
                    replaced[id(param)] = nn.Parameter(param.detach().to(dtype), requires_grad=False)
                    freed += param.numel() * (param.element_size() - replaced[id(param)].element_size())
                module._parameters[name] = replaced[id(param)]
        self.matmul_dtype = dtype
        return freed

    def encode_image(self, images: torch.Tensor, prompts: VisionPrompts | None = None) -> torch.Tensor:
        """Image features [B, embed_dim], not normalised; `prompts` (ViT only) as `VisionPrompts` documents."""
        with self._matmul_autocast():
            features, _ = visual_tower.forward_with_layers(
                self.visual, self._checked_images(images), prompts, keep_layers=False
            )
        return features

    def encode_image_with_layers(
        self, images: torch.Tensor, prompts: VisionPrompts | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(features [B, embed_dim], layers): ViT [B, T, width] per block before ln_post; ResNet 4 stage maps.

        With vision prompts T = 1 + patches + n, the prompt tokens being the last n.
        """
        with self._matmul_autocast():
            return visual_tower.forward_with_layers(
                self.visual, self._checked_images(images), prompts, keep_layers=True
            )

    def encode_text(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Text features [N, embed_dim] of token ids [N, L], not normalised."""
        return self.encode_prompts(self.token_embedding(token_ids), token_ids)

    def encode_prompts(
        self,
        prompt_embeddings: torch.Tensor,
        tokenized: torch.Tensor,
        truncate: bool = True,
        deep_prompts: Sequence[torch.Tensor] = (),
    ) -> torch.Tensor:
        """Text features [N, embed_dim] from prompt embeddings [N, L, text_width]; EOT = argmax of `tokenized`.

        `deep_prompts[i]` ([n, text_width] shared, or [N, n, text_width]) replaces positions 1..n before block
        i+1 (text prompt depth = 1 + len(deep_prompts)); the shallow prompt is part of `prompt_embeddings`.
        With `truncate`, the batch is cut to max(EOT)+1 tokens, which is exact because attention is causal.
        """
        expected = f"[N, L<={self.context_length}, {self.text_width}] and tokenized [N, L]"
        if prompt_embeddings.dim() != 3 or prompt_embeddings.shape[-1] != self.text_width:
            raise ValueError(f"prompt_embeddings has shape {list(prompt_embeddings.shape)}; expected {expected}")
        if tokenized.shape != prompt_embeddings.shape[:2] or tokenized.shape[1] > self.context_length:
            raise ValueError(
                f"tokenized has shape {list(tokenized.shape)}, prompt_embeddings {list(prompt_embeddings.shape)}; "
                f"expected {expected}"
            )
        eot_index = tokenized.argmax(dim=-1)
        n_deep = text_tower.check_deep_prompts(deep_prompts, len(tokenized), self.text_width, self.text_layers)
        if n_deep and int(eot_index.min()) <= n_deep:
            raise ValueError(
                f"deep text prompts replace positions 1..{n_deep}, but a prompt's EOT is at position "
                f"{int(eot_index.min())}; every EOT must come after them (placeholder words before the class name)"
            )
        with self._matmul_autocast():
            return text_tower.encode_from_embeddings(
                self, prompt_embeddings.to(self.dtype), eot_index, truncate,
                checkpointing=self.text_checkpointing, deep_prompts=deep_prompts,
            )

    def _matmul_autocast(self):
        """Autocast to `matmul_dtype` unless one is already on: low-precision weights need it to be exact."""
        device = self.positional_embedding.device.type
        if self.matmul_dtype is None or torch.is_autocast_enabled(device):
            return contextlib.nullcontext()
        return torch.autocast(device, dtype=self.matmul_dtype)

    def _require_vit(self, what: str) -> None:
        if self.visual_kind != "vit":
            raise ValueError(f"{what} needs a ViT image tower; this backbone's is a {self.visual_kind} (valid: ViT-*)")

    def _checked_images(self, images: torch.Tensor) -> torch.Tensor:
        size = self.image_size
        if images.dim() != 4 or images.shape[1] != 3 or tuple(images.shape[2:]) != (size, size):
            raise ValueError(f"images have shape {list(images.shape)}; expected [B, 3, {size}, {size}]")
        return images.to(self.dtype)
