"""Deep-prompt methods (IVLP, VPT, MaPLe, PromptSRC): parameters, prompt assembly, losses against direct
computations, Gaussian prompt aggregation, and one-line config errors. Training through train.py is covered
for every registered trainer by tests/test_trainers.py."""
import math

import pytest
import torch
import torch.nn.functional as F

import clip
from clip.tiny import build_tiny_clip
from dassl.config import ConfigError
from trainers.deep_prompts import IndependentPrompts, build_independent_prompts, text_context
from trainers.maple import CoupledPrompts, MaPLeNet
from trainers.promptsrc import (
    PROMPTSRC_TEMPLATES,
    AggregatedPrompts,
    PromptSRC,
    PromptSRCNet,
    gaussian_epoch_weights,
    logit_agreement,
)
from trainers.vpt import VPTNet

CLASSNAMES = ["dog", "sea_lion", "golden retriever"]


@pytest.fixture(scope="module")
def vit(tiny_clip_path):
    return clip.load(tiny_clip_path)


def method_cfg(trainer: str):
    import trainers  # noqa: F401  (registers the config extensions)
    from dassl.config import get_cfg_default, merge_from_file_checked
    from tests.test_trainers import tiny_config

    cfg = get_cfg_default()
    merge_from_file_checked(cfg, tiny_config(trainer))
    return cfg


def trainer_stub(cls, cfg):
    """A trainer object with only its config: enough for check_cfg."""
    trainer = object.__new__(cls)
    trainer.cfg, trainer.precision, trainer.device = cfg, "fp32", torch.device("cpu")
    return trainer


# ---- parameters: the reference's counts for ViT-B/16 widths (d_t 512, d_v 768) --------------------------------

def test_learned_parameter_counts_match_the_published_configs():
    def count(module):
        return sum(p.numel() for p in module.parameters())

    assert count(IndependentPrompts(torch.zeros(2, 512), 12, 12, 2, 768)) == 30_720  # IVLP 2+2, J 12
    assert count(IndependentPrompts(torch.zeros(4, 512), 9, 9, 4, 768)) == 46_080  # IVLP / PromptSRC 4+4, J 9
    assert count(IndependentPrompts(torch.zeros(4, 512), 12)) == 24_576  # Deep language prompting
    assert count(CoupledPrompts(torch.zeros(2, 512), 9, 768)) == 3_555_072  # MaPLe base-to-new
    assert count(CoupledPrompts(torch.zeros(2, 512), 3, 768)) == 1_185_024  # MaPLe cross-dataset


def test_short_context_init_learns_the_first_tokens_and_keeps_the_rest_as_words(vit):
    ctx, prefix = text_context(vit, 2, "a photo of a", "K.N_CTX", "K.CTX_INIT")
    assert prefix == "a photo of a"
    torch.testing.assert_close(ctx, vit.token_embedding(clip.tokenize(["a photo"])[0, 1:3]))
    cfg = method_cfg("IVLP").TRAINER.IVLP
    learner, prompts = build_independent_prompts(vit, cfg, "TRAINER.IVLP", CLASSNAMES)
    expected = clip.tokenize([f"a photo of a {n.replace('_', ' ')}." for n in CLASSNAMES])
    assert torch.equal(prompts.tokens, expected[:, : prompts.tokens.shape[1]])  # "of a" stays a frozen word
    _, random_prefix = text_context(vit, 5, "a photo of a", "K.N_CTX", "K.CTX_INIT")  # > 4: random, "X" x 5
    assert random_prefix == "X X X X X"


def test_maple_couplings_derive_the_vision_prompts_and_start_identical_as_public(vit):
    torch.manual_seed(0)
    learner = CoupledPrompts(torch.randn(2, vit.text_width), 3, vit.vision_width)
    prompts = learner.vision_prompts()
    torch.testing.assert_close(prompts.shallow, learner.proj(learner.ctx))
    for coupling, text, vision in zip(learner.deep_proj, learner.text_deep_prompts(), prompts.deep):
        torch.testing.assert_close(vision, coupling(text))
    assert torch.equal(learner.deep_proj[0].weight, learner.deep_proj[1].weight)
    independent = CoupledPrompts(torch.randn(2, vit.text_width), 3, vit.vision_width, independent_init=True)
    assert not torch.equal(independent.deep_proj[0].weight, independent.deep_proj[1].weight)


def test_maple_gradients_reach_text_prompts_through_both_towers(vit):
    cfg = method_cfg("MaPLe")
    torch.manual_seed(0)
    net = MaPLeNet.from_config(cfg, vit, CLASSNAMES)
    images = torch.randn(2, 3, 32, 32)
    image_only = net.image_features(images).square().sum()  # the vision tower alone
    image_only.backward()
    assert net.prompt_learner.ctx.grad.abs().sum() > 0 and net.prompt_learner.deep_text.grad.abs().sum() > 0


def test_vpt_uses_the_fixed_template_and_learns_only_vision_prompts(vit):
    cfg = method_cfg("VPT")
    net = VPTNet.from_config(cfg, vit, CLASSNAMES, cfg.TRAINER.VPT.TEMPLATE)
    assert isinstance(net, VPTNet) and [n for n, _ in net.prompt_learner.named_parameters()] == ["vision"]
    tokens = clip.tokenize([f"a photo of a {n.replace('_', ' ')}." for n in CLASSNAMES])
    with torch.no_grad():
        expected = F.normalize(vit.encode_text(tokens).float(), dim=-1)
    torch.testing.assert_close(net.text_features(), expected)
    cfg.TRAINER.VPT.N_CTX_TEXT = 4  # CoOp-style learned text context
    coop_style = VPTNet.from_config(cfg, vit, CLASSNAMES, None)
    assert coop_style.prompt_learner.ctx.shape == (4, vit.text_width)
    assert coop_style.prompt_learner.text_deep_prompts() == []
    # Fixed class text features are no step's work; a learned text context runs the text tower each step.
    assert net.step_work(2)["instances"] == 0 and coop_style.step_work(2)["instances"] == 1
    assert coop_style.fixed_text is None and coop_style.text_features().requires_grad


def test_language_only_ivlp_runs_the_image_tower_without_autograd(vit):
    cfg = method_cfg("IVLP").TRAINER.IVLP
    cfg.PROMPT_DEPTH_VISION, cfg.N_CTX_VISION = 0, 0
    learner, _ = build_independent_prompts(vit, cfg, "TRAINER.IVLP", CLASSNAMES)
    assert learner.vision is None and learner.vision_prompts() is None


# ---- PromptSRC ----------------------------------------------------------------------------------------------

def test_gaussian_weights_match_the_reference_values():
    weights = gaussian_epoch_weights(20, 15, 1)
    assert [round(w, 3) for w in weights[11:18]] == [0.004, 0.054, 0.242, 0.399, 0.242, 0.054, 0.004]
    assert math.isclose(sum(weights), 1.0)
    flat = gaussian_epoch_weights(20, 6, 10)
    assert (round(flat[0], 3), round(flat[5], 3), round(flat[19], 3)) == (0.055, 0.063, 0.024)
    assert round(max(gaussian_epoch_weights(50, 45, 5)), 3) == 0.092


def test_aggregation_is_the_weighted_sum_of_the_epochs_prompts_and_is_checkpointed():
    torch.manual_seed(0)
    weights = gaussian_epoch_weights(3, 2, 1)
    learner = AggregatedPrompts(torch.zeros(2, 8), 2, 2, 2, 6, epoch_weights=weights)
    snapshots = []
    for epoch in (1, 2, 3):
        with torch.no_grad():
            for p in learner.parameters():
                p.normal_()
        snapshots.append({n: p.detach().clone() for n, p in learner.named_parameters()})
        learner.accumulate(epoch)
    assert {"gpa_ctx", "gpa_deep_text", "gpa_vision"} <= set(learner.state_dict())  # survives a resume
    learner.use_average()
    for name, param in learner.named_parameters():
        torch.testing.assert_close(param, sum(w * s[name] for w, s in zip(weights, snapshots)))


def test_promptsrc_swaps_in_the_average_after_the_last_epoch_before_the_engine_saves(monkeypatch):
    from dassl.engine import TrainerX

    saved = []
    monkeypatch.setattr(TrainerX, "after_epoch", lambda self: saved.append(self.model.prompt_learner.ctx.clone()))
    weights = gaussian_epoch_weights(2, 2.0, 1.0)
    trainer = object.__new__(PromptSRC)
    trainer.model = torch.nn.Module()
    trainer.model.prompt_learner = learner = AggregatedPrompts(torch.zeros(1, 4), 1, epoch_weights=weights)
    trainer.max_epoch = 2
    for trainer.epoch, value in enumerate((1.0, 3.0)):
        with torch.no_grad():
            learner.ctx.fill_(value)
        trainer.after_epoch()
    assert torch.equal(saved[0], torch.ones(1, 4))  # epoch 1: the live prompts are saved
    torch.testing.assert_close(saved[1], torch.full((1, 4), weights[0] * 1.0 + weights[1] * 3.0))


def test_promptsrc_losses_equal_a_direct_computation(vit):
    cfg = method_cfg("PromptSRC")
    torch.manual_seed(0)
    net = PromptSRCNet.from_config(cfg, vit, CLASSNAMES)
    assert isinstance(net, PromptSRCNet)
    assert sum(isinstance(m, clip.CLIPBackbone) for m in net.modules()) == 1  # the teacher is the same backbone
    images, labels = torch.randn(3, 3, 32, 32), torch.tensor([0, 2, 1])
    terms = net.losses({"img": images}, labels)

    with torch.no_grad():
        image = F.normalize(net.clip.encode_image(images, net.prompt_learner.vision_prompts()), dim=-1)
        text = net.prompted_text_features()
        teacher_image = F.normalize(vit.encode_image(images), dim=-1)  # no prompts
        sums = sum(vit.encode_text(clip.tokenize([t.format(n.replace("_", " ")) for n in CLASSNAMES]))
                   for t in PROMPTSRC_TEMPLATES)
        teacher_text = F.normalize(sums / len(PROMPTSRC_TEMPLATES), dim=-1)
        scale = vit.logit_scale.exp()
        p_student = (scale * image @ text.t()).softmax(-1)
        p_teacher = (scale * teacher_image @ teacher_text.t()).softmax(-1)
        b, c = p_student.shape
        kl = sum(p_teacher[i, j] * (p_teacher[i, j].log() - p_student[i, j].log())
                 for i in range(b) for j in range(c)) / (b * c)
        ce = -sum(p_student[i, labels[i]].log() for i in range(b)) / b
    d = text.shape[1]
    torch.testing.assert_close(terms["loss_ce"], ce, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(terms["loss_text"], 25.0 * (text - teacher_text).abs().sum() / (c * d))
    torch.testing.assert_close(terms["loss_image"], 10.0 * (image - teacher_image).abs().sum() / (b * d))
    torch.testing.assert_close(terms["loss_kl"], kl, atol=1e-6, rtol=1e-5)
    logits = torch.randn(4, 5)
    assert torch.isclose(logit_agreement(logits, logits.flip(0), "batchmean"),
                         5 * logit_agreement(logits, logits.flip(0), "numel"))
    sum(v for k, v in terms.items() if k.startswith("loss")).backward()
    assert all(p.grad.abs().sum() > 0 for p in net.prompt_learner.parameters())


# ---- one-line config errors, before the prompts are built ---------------------------------------------------

def _one_line_error(fn, pattern):
    with pytest.raises(ConfigError, match=pattern) as error:
        fn()
    assert "\n" not in str(error.value)


def test_bad_depths_tokens_and_windows_are_one_line_errors(vit, tiny_resnet_clip_path):
    ivlp = method_cfg("IVLP").TRAINER.IVLP
    ivlp.PROMPT_DEPTH_TEXT = 3
    _one_line_error(lambda: build_independent_prompts(vit, ivlp, "TRAINER.IVLP", CLASSNAMES),
                    r"TRAINER.IVLP.PROMPT_DEPTH_TEXT is 3; valid: 1\.\.2 \(the text tower has 2 blocks\)")
    ivlp.PROMPT_DEPTH_TEXT, ivlp.PROMPT_DEPTH_VISION = 2, 5
    _one_line_error(lambda: build_independent_prompts(vit, ivlp, "TRAINER.IVLP", CLASSNAMES),
                    r"TRAINER.IVLP.PROMPT_DEPTH_VISION is 5; valid: 1\.\.2 \(the image tower has 2 blocks\)")
    ivlp.PROMPT_DEPTH_VISION, ivlp.N_CTX_TEXT, ivlp.CTX_INIT = 2, 70, ""
    _one_line_error(lambda: build_independent_prompts(vit, ivlp, "TRAINER.IVLP", ["a long class name here"]),
                    r"TRAINER.IVLP.N_CTX_TEXT 70: the prompt for class 'a long class name here' needs 78 tokens but the "
                    r"context length is 77")
    ivlp.N_CTX_TEXT, ivlp.CTX_INIT = 4, "a photo"
    _one_line_error(lambda: build_independent_prompts(vit, ivlp, "TRAINER.IVLP", CLASSNAMES),
                    r"TRAINER.IVLP.CTX_INIT 'a photo' has 2 tokens, fewer than TRAINER.IVLP.N_CTX_TEXT 4")

    resnet = clip.load(tiny_resnet_clip_path)
    ivlp.CTX_INIT = "a photo of a"
    _one_line_error(lambda: build_independent_prompts(resnet, ivlp, "TRAINER.IVLP", CLASSNAMES),
                    r"TRAINER.IVLP.PROMPT_DEPTH_VISION is 2 but vision prompts need a ViT backbone .* resnet")
    maple = method_cfg("MaPLe")
    _one_line_error(lambda: MaPLeNet.from_config(maple, resnet, CLASSNAMES),
                    r"TRAINER.MAPLE.PROMPT_DEPTH is 2 but vision prompts need a ViT")
    maple.TRAINER.MAPLE.PROMPT_DEPTH = 3
    _one_line_error(lambda: MaPLeNet.from_config(maple, vit, CLASSNAMES),
                    r"TRAINER.MAPLE.PROMPT_DEPTH is 3; valid: 1\.\.2")
    vpt = method_cfg("VPT")
    _one_line_error(lambda: VPTNet.from_config(vpt, resnet, CLASSNAMES, vpt.TRAINER.VPT.TEMPLATE),
                    r"TRAINER.VPT.PROMPT_DEPTH_VISION is 2 but vision prompts need a ViT")

    src = method_cfg("PromptSRC")
    src.TRAINER.PROMPTSRC.GPA_MEAN = 3.0
    _one_line_error(lambda: trainer_stub(PromptSRC, src).check_cfg(src),
                    r"TRAINER.PROMPTSRC.GPA_MEAN is 3.0; valid: 1\.\.1 \(OPTIM.MAX_EPOCH\)")
    src.TRAINER.PROMPTSRC.GPA_MEAN, src.TRAINER.PROMPTSRC.GPA_STD = 1.0, 0.0
    _one_line_error(lambda: trainer_stub(PromptSRC, src).check_cfg(src), r"GPA_STD is 0.0; valid: > 0")


def test_text_only_prompts_work_on_a_resnet_backbone():
    resnet = clip.CLIPBackbone(build_tiny_clip("resnet"))
    cfg = method_cfg("IVLP").TRAINER.IVLP
    cfg.PROMPT_DEPTH_VISION, cfg.N_CTX_VISION = 0, 0
    learner, _ = build_independent_prompts(resnet, cfg, "TRAINER.IVLP", CLASSNAMES)
    assert learner.vision_prompts() is None
