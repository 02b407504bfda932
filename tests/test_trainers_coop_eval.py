"""CoOp evaluation reuses its class text features until the context changes."""
import pytest
import torch

import clip
from trainers.class_prompts import ClassPrompts, init_context
from trainers.coop import CoOpNet, CoOpPromptLearner

CLASSNAMES = ["dog", "cat", "sea lion"]


@pytest.fixture()
def net(tiny_clip_path):
    torch.manual_seed(0)
    vit = clip.load(tiny_clip_path)
    learner = CoOpPromptLearner(init_context(vit, 4, ""))
    return CoOpNet(vit, learner, ClassPrompts(vit, CLASSNAMES, 4))


def test_eval_text_features_are_computed_once_and_refreshed_after_updates(net, monkeypatch):
    calls = []
    original = net.class_prompts.class_features
    monkeypatch.setattr(net.class_prompts, "class_features", lambda *a: calls.append(1) or original(*a))
    images = torch.randn(2, 3, 32, 32)

    with torch.no_grad():
        first = net(images)
        assert torch.equal(net(images), first) and len(calls) == 1  # second batch reuses the features

    optimizer = torch.optim.SGD(net.prompt_learner.parameters(), lr=1.0)
    net(images).logsumexp(dim=-1).sum().backward()  # with grad: always computed afresh
    optimizer.step()
    with torch.no_grad():
        after_step = net(images)
    assert len(calls) == 3 and not torch.allclose(after_step, first)

    net.prompt_learner.load_state_dict({"ctx": torch.zeros_like(net.prompt_learner.ctx)})
    with torch.no_grad():
        after_load = net(images)
        expected = net.clip.logit_scale.exp() * torch.nn.functional.normalize(
            net.clip.encode_image(images).float(), dim=-1
        ) @ original(net.clip, net.prompt_learner.ctx).t()
    assert len(calls) == 4 and torch.allclose(after_load, expected, atol=1e-6)
