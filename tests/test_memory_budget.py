"""TRAIN.MEMORY_BUDGET_GB: chunked, checkpointed text passes give the unchunked step's losses and gradients,
and the chunk size follows from the shapes."""
import copy

import pytest
import torch

import clip
from clip import text as text_tower
from dassl.config import ConfigError
from trainers import chunking
from trainers.chunking import (
    GIB,
    HEADROOM,
    KEPT_FEATURE_COPIES,
    SAVED_WIDTHS_PER_TOKEN_LAYER,
    InstanceTextPass,
    plan_text_chunks,
    tower_bytes,
)
from trainers.class_prompts import ClassPrompts, init_context
from trainers.cocoop import CoCoOpNet, CoCoOpPromptLearner
from trainers.gopro import GOProNet, GOProPromptLearner

CLASSNAMES = ["dog", "cat", "golden retriever", "sea_lion", "car"]
B = 2


@pytest.fixture(scope="module")
def vit(tiny_clip_path):
    return clip.load(tiny_clip_path)


def budget_for_chunk(clip_model, n_prompts: int, n_tokens: int, chunk: int) -> float:
    """The budget (GiB) under which ``plan_text_chunks`` picks exactly ``chunk`` prompts per chunk."""
    per_prompt = n_tokens * clip_model.text_width * len(clip_model.transformer.resblocks) * 4
    per_prompt *= SAVED_WIDTHS_PER_TOKEN_LAYER
    fixed = tower_bytes(clip_model) + n_prompts * clip_model.embed_dim * 4 * KEPT_FEATURE_COPIES
    return (fixed + chunk * per_prompt + per_prompt // 2) / (1 - HEADROOM) / GIB


def gopro_net(clip_model, budget):
    torch.manual_seed(0)
    learner = GOProPromptLearner(
        init_context(clip_model, 4, "a photo of a"), clip_model.visual_layer_widths, clip_model.text_width,
        clip_model.embed_dim,
    )
    return GOProNet(clip_model, learner, ClassPrompts(clip_model, CLASSNAMES, 4), memory_budget_gb=budget)


def cocoop_net(clip_model, budget):
    torch.manual_seed(0)
    learner = CoCoOpPromptLearner(init_context(clip_model, 4, ""), clip_model.embed_dim, clip_model.text_width)
    return CoCoOpNet(clip_model, learner, ClassPrompts(clip_model, CLASSNAMES, 4), memory_budget_gb=budget)


def losses_and_grads(net, images, labels):
    terms = net.losses(images, labels)
    sum(v for k, v in terms.items() if k.startswith("loss")).backward()
    grads = {n: p.grad.clone() for n, p in net.prompt_learner.named_parameters()}
    return {k: v.detach() for k, v in terms.items()}, grads


@pytest.mark.parametrize(("make_net", "text_views"), [(gopro_net, 3), (cocoop_net, 1)])
def test_chunked_step_has_the_unchunked_losses_and_gradients(vit, make_net, text_views, monkeypatch):
    g = torch.Generator().manual_seed(1)
    size = vit.image_size
    images = {k: torch.randn(B, 3, size, size, generator=g) for k in ("img", "img_moco", "img_augmix")}
    labels = torch.tensor([0, 4])
    n_prompts = text_views * B * len(CLASSNAMES)
    reference = make_net(vit, None)
    budget = budget_for_chunk(vit, n_prompts, reference.class_prompts.tokens.shape[1], chunk=4)
    chunked = make_net(vit, budget)
    chunked.prompt_learner.load_state_dict(copy.deepcopy(reference.prompt_learner.state_dict()))

    widths = []
    block = text_tower.causal_block
    monkeypatch.setattr(text_tower, "causal_block", lambda b, x: widths.append(x.shape[0]) or block(b, x))
    ref_terms, ref_grads = losses_and_grads(reference, images, labels)
    n_blocks = len(vit.transformer.resblocks)
    assert widths == [n_prompts] * n_blocks  # no budget: one pass, as before
    widths.clear()
    terms, grads = losses_and_grads(chunked, images, labels)

    chunks = ([n_prompts % 4] if n_prompts % 4 else []) + [4] * (n_prompts // 4)
    # Forward over each chunk (the remainder first), then every chunk but the last recomputed in backward, after
    # the last one's backward has freed its activations: only 4 prompts' activations at a time.
    recomputed = [c for c in reversed(chunks[:-1]) for _ in range(n_blocks)]
    assert widths == [c for c in chunks for _ in range(n_blocks)] + recomputed
    assert max(widths) == 4
    for key in ref_terms:
        torch.testing.assert_close(terms[key], ref_terms[key], rtol=0, atol=1e-6)
    # 1e-6 of the gradients' scale: a gradient that is a cancelling sum of O(1) terms (GOPro's rho bias
    # shifts every channel alike, which LayerNorm removes, so its true gradient is 0) is rounding noise
    # of that size in both paths, whatever the summation order.
    scale = 1 + max(g.abs().max().item() for g in ref_grads.values())
    for name in ref_grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=0, atol=1e-6 * scale)


def test_chunk_size_follows_the_shapes():
    mib = 2**20
    weights = 600 * mib
    plan = plan_text_chunks(n_prompts=12000, n_tokens=8, width=512, layers=12, element_size=4, embed_dim=512,
                            budget_bytes=12 * GIB, resident_bytes=weights)
    per_prompt = 8 * 512 * 12 * 4 * SAVED_WIDTHS_PER_TOKEN_LAYER
    available = int(12 * GIB * (1 - HEADROOM)) - weights - 12000 * 512 * 4 * KEPT_FEATURE_COPIES
    assert plan.bytes_per_prompt == per_prompt and plan.chunk == available // per_prompt
    assert plan.chunked and plan.n_chunks == -(-12000 // plan.chunk)
    # Twice the tokens: half the prompts per chunk (up to rounding); bf16/fp16 stream: twice as many.
    longer = plan_text_chunks(12000, 16, 512, 12, 4, 512, 12 * GIB, weights)
    assert longer.chunk == available // (2 * per_prompt)
    assert plan_text_chunks(12000, 8, 512, 12, 2, 512, 12 * GIB, weights).chunk == available // (per_prompt // 2)
    # A budget that holds every prompt: one pass.
    assert not plan_text_chunks(100, 8, 512, 12, 4, 512, 12 * GIB, weights).chunked


def test_too_small_budget_names_the_key_and_the_budget_that_fits():
    with pytest.raises(ConfigError, match=r"TRAIN.MEMORY_BUDGET_GB 0.5 is too small .* at least 0.7"):
        plan_text_chunks(100, 8, 512, 12, 4, 512, GIB // 2, resident_bytes=600 * 2**20)
    with pytest.raises(ConfigError, match="TRAIN.MEMORY_BUDGET_GB is -1"):
        InstanceTextPass(-1)
    with pytest.raises(ConfigError, match="TRAIN.MEMORY_BUDGET_GB is 'big'"):
        InstanceTextPass("big")


def test_saved_activations_per_prompt_stay_within_the_estimate(vit):
    """The constant behind the chunk size bounds what autograd really keeps for the text tower."""
    prompts = ClassPrompts(vit, CLASSNAMES * 8, 4)
    n, n_tokens = prompts.n_cls, prompts.tokens.shape[1]
    ctx = init_context(vit, 4, "a photo of a").requires_grad_(True)
    weights = {t.untyped_storage().data_ptr() for t in list(vit.parameters()) + list(vit.buffers())}
    weights |= {t.untyped_storage().data_ptr() for t in prompts.buffers()}
    saved: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        prompts.class_features(vit, ctx)
    estimate = n * n_tokens * vit.text_width * len(vit.transformer.resblocks) * 4 * SAVED_WIDTHS_PER_TOKEN_LAYER
    assert 0.6 * estimate <= sum(saved.values()) <= estimate


def test_budget_bounds_the_evaluation_chunk_and_logs_the_training_plan(vit, caplog):
    n_tokens = ClassPrompts(vit, CLASSNAMES, 4).tokens.shape[1]
    assert InstanceTextPass(None, eval_chunk=64).eval_chunk_for(vit, n_tokens) == 64
    per_prompt = n_tokens * vit.text_width * 4 * chunking.EVAL_WIDTHS_PER_TOKEN
    budget = (tower_bytes(vit) + 10.5 * per_prompt) / (1 - HEADROOM) / GIB
    assert InstanceTextPass(budget, eval_chunk=64).eval_chunk_for(vit, n_tokens) == 10
    text_pass = InstanceTextPass(budget_for_chunk(vit, 30, n_tokens, chunk=7))
    with caplog.at_level("INFO", logger="trainers.chunking"):
        plan = text_pass.plan(vit, 30, n_tokens)
        text_pass.plan(vit, 30, n_tokens)
    assert plan.chunk == 7 and plan.n_chunks == 5
    assert [r.getMessage() for r in caplog.records if "chunk(s) of 7" in r.getMessage()] != []
    assert len(caplog.records) == 1  # once per shape, not every step
