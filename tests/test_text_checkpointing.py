"""Text-tower activation checkpointing changes memory, never the features or their gradients."""
import torch

import clip
from clip import text as text_tower


def test_checkpointing_gives_identical_features_and_gradients(tiny_clip_path, monkeypatch):
    model = clip.load(tiny_clip_path)
    torch.manual_seed(0)
    tokens = clip.tokenize(["a photo of a dog.", "a cat.", "a very small red star on a table."])
    embeddings = model.token_embedding(tokens).detach()

    def features_and_grad(checkpointing: bool):
        model.text_checkpointing = checkpointing
        prompts = embeddings.clone().requires_grad_(True)
        features = model.encode_prompts(prompts, tokens)
        features.square().sum().backward()
        return features.detach(), prompts.grad

    calls = []
    block_fn = text_tower.causal_block
    monkeypatch.setattr(text_tower, "causal_block", lambda *a: calls.append(1) or block_fn(*a))
    plain, plain_grad = features_and_grad(False)
    n_blocks = len(calls)
    kept, kept_grad = features_and_grad(True)
    assert len(calls) - n_blocks == 2 * n_blocks  # every block runs again in backward: it was recomputed
    assert torch.allclose(plain, kept, atol=1e-6) and torch.allclose(plain_grad, kept_grad, atol=1e-6)
