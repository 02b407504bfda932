"""KgCoOp's loss against a direct computation: CE + W · (1 − mean cos) to hand-written class embeddings."""
import pytest
import torch
import torch.nn.functional as F

import clip
from trainers.class_prompts import ClassPrompts, init_context
from trainers.coop import CoOpPromptLearner
from trainers.kgcoop import KgCoOpNet

CLASSNAMES = ["dog", "sea_lion", "golden retriever"]
TEMPLATE = "a photo of a {}, a type of animal."


@pytest.fixture(scope="module")
def vit(tiny_clip_path):
    return clip.load(tiny_clip_path)


def make_net(vit, ctx_init="", weight=8.0, penalty="cosine", template=TEMPLATE) -> KgCoOpNet:
    torch.manual_seed(0)
    learner = CoOpPromptLearner(init_context(vit, 4, ctx_init))
    return KgCoOpNet(vit, learner, ClassPrompts(vit, CLASSNAMES, learner.n_ctx), CLASSNAMES, template, weight, penalty)


def reference_terms(vit, ctx, images, labels, weight):
    """Every prompt built at full context length, learned words written over the placeholders by hand."""
    prompts = clip.tokenize([f"X X X X {n.replace('_', ' ')}." for n in CLASSNAMES])
    embeddings = vit.token_embedding(prompts).clone()
    embeddings[:, 1:5] = ctx
    learned = F.normalize(vit.encode_prompts(embeddings, prompts, truncate=False), dim=-1)
    written = clip.tokenize([TEMPLATE.format(n.replace("_", " ")) for n in CLASSNAMES])
    handwritten = F.normalize(vit.encode_text(written), dim=-1)
    image = F.normalize(vit.encode_image(images), dim=-1)
    logits = vit.logit_scale.exp() * image @ learned.t()
    cos = torch.stack([F.cosine_similarity(learned[c], handwritten[c], dim=0) for c in range(len(CLASSNAMES))])
    return F.cross_entropy(logits, labels), weight * (1 - cos.mean()), learned, handwritten


def test_loss_terms_match_a_direct_computation_and_only_the_context_learns(vit):
    net = make_net(vit)
    g = torch.Generator().manual_seed(1)
    images, labels = torch.randn(4, 3, 32, 32, generator=g), torch.tensor([0, 2, 1, 2])
    terms = net.losses({"img": images}, labels)
    ce, kg, learned, handwritten = reference_terms(vit, net.prompt_learner.ctx, images, labels, 8.0)
    torch.testing.assert_close(terms["loss_ce"], ce, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(terms["loss_kg"], kg, rtol=1e-5, atol=1e-5)
    assert kg > 1e-3  # a random context is far from the hand-written prompt, so the term is not trivially 0
    (terms["loss_ce"] + terms["loss_kg"]).backward()
    assert [n for n, p in net.named_parameters() if p.requires_grad] == ["prompt_learner.ctx"]
    assert net.prompt_learner.ctx.grad.abs().sum() > 0 and all(p.grad is None for p in vit.parameters())

    squared = make_net(vit, penalty="squared_l2").losses({"img": images}, labels)["loss_kg"]
    torch.testing.assert_close(squared, 8.0 * (learned - handwritten).pow(2).sum(-1).mean(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(squared, 2 * kg, rtol=1e-5, atol=1e-5)  # unit vectors: ||t - w||² = 2 (1 - cos)


def test_the_teacher_is_the_same_backbone_without_prompts(vit):
    """At CTX_INIT "a photo of a" with template "a photo of a {}." the learned prompt is the template: distance 0."""
    net = make_net(vit, ctx_init="a photo of a", template="a photo of a {}.")
    g = torch.Generator().manual_seed(2)
    terms = net.losses({"img": torch.randn(2, 3, 32, 32, generator=g)}, torch.tensor([0, 1]))
    assert abs(terms["loss_kg"].item()) < 1e-5
    assert sum(1 for m in net.modules() if isinstance(m, type(vit))) == 1  # one CLIP, no second copy
