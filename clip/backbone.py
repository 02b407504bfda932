"""CLIPBackbone: the frozen CLIP that trainers use, with per-layer image features and prompt text encoding."""
from __future__ import annotations

import torch
from torch import nn

from . import text as text_tower
from . import visual as visual_tower


class CLIPBackbone(nn.Module):
    """A frozen open_clip CLIP under OpenAI's attribute names; every size is read from the weights."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        # open_clip's CLIP keeps the text pieces on itself, CustomTextCLIP on `.text`.
        text = getattr(model, "text", model)
        self.visual_kind = visual_tower.visual_kind(model.visual)
        text_tower.check_text_tower(text)
        self.visual = model.visual
        self.transformer = text.transformer
        self.token_embedding = text.token_embedding
        self.positional_embedding = text.positional_embedding
        self.ln_final = text.ln_final
        self.text_projection = text.text_projection
        self.logit_scale = model.logit_scale
        # Recompute text-block activations in backward (less memory, ~1/3 more text time); set by trainers.
        self.text_checkpointing = False
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
    def context_length(self) -> int:
        return self.positional_embedding.shape[0]

    @property
    def image_size(self) -> int:
        size = self.visual.image_size
        return size if isinstance(size, int) else size[0]

    @property
    def visual_layer_widths(self) -> list[int]:
        return visual_tower.layer_widths(self.visual)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Image features [B, embed_dim], not normalised (open_clip's own forward)."""
        return self.visual(self._checked_images(images))

    def encode_image_with_layers(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(features [B, embed_dim], layers): ViT [B, T, width] per block before ln_post; ResNet 4 stage maps."""
        return visual_tower.forward_with_layers(self.visual, self._checked_images(images))

    def encode_text(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Text features [N, embed_dim] of token ids [N, L], not normalised."""
        return self.encode_prompts(self.token_embedding(token_ids), token_ids)

    def encode_prompts(
        self, prompt_embeddings: torch.Tensor, tokenized: torch.Tensor, truncate: bool = True
    ) -> torch.Tensor:
        """Text features [N, embed_dim] from prompt embeddings [N, L, text_width]; EOT = argmax of `tokenized`.

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
        return text_tower.encode_from_embeddings(
            self, prompt_embeddings.to(self.dtype), eot_index, truncate, checkpointing=self.text_checkpointing
        )

    def _checked_images(self, images: torch.Tensor) -> torch.Tensor:
        size = self.image_size
        if images.dim() != 4 or images.shape[1] != 3 or tuple(images.shape[2:]) != (size, size):
            raise ValueError(f"images have shape {list(images.shape)}; expected [B, 3, {size}, {size}]")
        return images.to(self.dtype)
