"""Shared prompt pieces, losses, views, the CoOp/CoCoOp/zero-shot modules, and all trainers through train.py."""
import os
import re
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import clip
from trainers.checks import check_context_fits, check_input_size
from trainers.class_prompts import ClassPrompts, init_context
from trainers.cocoop import CoCoOpNet, CoCoOpPromptLearner
from trainers.coop import CoOpNet, CoOpPromptLearner
from trainers.losses import consistency_loss, simclr_loss
from trainers.templates import dataset_template
from trainers.zsclip import ZeroshotClassifier

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSNAMES = ["dog", "sea_lion", "golden retriever"]


@pytest.fixture(scope="module")
def vit(tiny_clip_path):
    return clip.load(tiny_clip_path)


def tiny_cfg(method="GOPro"):
    import trainers  # noqa: F401  (registers the config extensions)
    from dassl.config import get_cfg_default, merge_from_file_checked

    cfg = get_cfg_default()
    merge_from_file_checked(cfg, os.path.join(REPO, "configs", "trainers", method, "tiny.yaml"))
    return cfg


# ---- prompting ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("position,template", [("end", "X X X {}."), ("front", "{} X X X."), ("middle", "X {} X X.")])
def test_class_prompts_put_the_class_name_where_asked(vit, position, template):
    prompts = ClassPrompts(vit, CLASSNAMES, n_ctx=3, position=position)
    ctx = torch.zeros(len(CLASSNAMES), 3, vit.text_width)
    embeddings, tokens = prompts.embed(ctx, torch.arange(len(CLASSNAMES)))
    expected = clip.tokenize([template.format(n.replace("_", " ")) for n in CLASSNAMES])[:, : tokens.shape[1]]
    assert torch.equal(tokens, expected)
    assert tokens.shape[1] == int(tokens.argmax(-1).max()) + 1  # cut right after the longest EOT
    name_rows = tokens != clip.tokenize(["X"])[0, 1]
    assert torch.equal(embeddings[name_rows], vit.token_embedding(tokens)[name_rows])


def test_class_prompt_buffers_stay_out_of_the_state_dict(vit):
    assert ClassPrompts(vit, CLASSNAMES, n_ctx=2, position="middle").state_dict() == {}


def test_context_init_from_words_uses_their_embeddings(vit):
    ctx = init_context(vit, 16, "a photo of a")
    ids = clip.tokenize(["a photo of a"])[0, 1:5]
    assert torch.equal(ctx, vit.token_embedding(ids))
    torch.manual_seed(0)
    random = init_context(vit, 5, "", n_cls=3)
    assert random.shape == (3, 5, vit.text_width) and 0.01 < random.std() < 0.03


def test_config_checks_name_the_key(vit):
    with pytest.raises(ValueError, match="TRAINER.COOP.N_CTX 70"):
        check_context_fits(70, ["a very long class name indeed"], vit.context_length, "TRAINER.COOP.N_CTX")
    cfg = tiny_cfg()
    cfg.INPUT.SIZE = (224, 224)
    with pytest.raises(ValueError, match=r"INPUT.SIZE .*\(32, 32\)"):
        check_input_size(cfg, vit)
    with pytest.raises(ValueError, match="CLASS_TOKEN_POSITION"):
        ClassPrompts(vit, CLASSNAMES, 2, position="left")


def test_every_registered_dataset_carries_its_template_and_one_without_is_told():
    import datasets  # noqa: F401  (registers the loaders)
    from dassl.data.datasets import DATASET_REGISTRY, DatasetBase

    for name in DATASET_REGISTRY.registered_names():
        cls = DATASET_REGISTRY.get(name)
        if issubclass(cls, datasets.base.BenchmarkDataset):
            assert "{}" in cls.template, name
    assert dataset_template(DATASET_REGISTRY.get("EuroSAT").__new__(DATASET_REGISTRY.get("EuroSAT"))) == (
        "a centered satellite photo of {}."
    )

    class ForkDataset(DatasetBase):
        pass

    with pytest.raises(ValueError, match=r"Dataset ForkDataset has no zero-shot template.*`template = "):
        dataset_template(ForkDataset.__new__(ForkDataset))


# ---- losses -------------------------------------------------------------------------------------------------

def test_simclr_matches_a_direct_nt_xent_and_is_symmetric():
    torch.manual_seed(0)
    za, zb = torch.randn(5, 8), torch.randn(5, 8)
    a, b = F.normalize(za, dim=-1), F.normalize(zb, dim=-1)
    expected = []
    for anchors, others in ((a, b), (b, a)):
        for i in range(5):
            negatives_same = torch.cat([anchors[:i], anchors[i + 1 :]])
            logits = torch.cat([others @ anchors[i], negatives_same @ anchors[i]]) / 0.1
            expected.append(torch.logsumexp(logits, 0) - logits[i])
    torch.testing.assert_close(simclr_loss(za, zb, 0.1), torch.stack(expected).mean())
    torch.testing.assert_close(simclr_loss(za, zb, 0.1), simclr_loss(zb, za, 0.1))
    assert simclr_loss(za, za, 0.1) < simclr_loss(za, zb, 0.1)


def test_consistency_sums_mse_over_views():
    x, y, z = torch.zeros(2, 3), torch.ones(2, 3), torch.full((2, 3), 2.0)
    assert consistency_loss(x, [y, z]) == 5.0
    assert consistency_loss(x, [x.clone()]) == 0


# ---- views --------------------------------------------------------------------------------------------------

def test_views_are_three_normalised_tensors_from_pixels():
    from trainers.views import build_view_transforms

    cfg = tiny_cfg()
    views = build_view_transforms(cfg)
    assert set(views) == {"img", "img_moco", "img_augmix"}
    torch.manual_seed(0)
    image = Image.new("RGB", (48, 40), (200, 30, 90))
    out = {k: t(image) for k, t in views.items()}
    mean = torch.tensor(cfg.INPUT.PIXEL_MEAN)[:, None, None]
    std = torch.tensor(cfg.INPUT.PIXEL_STD)[:, None, None]
    for key, x in out.items():
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32, key
        pixels = x * std + mean
        assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5, key  # de-normalises to valid pixels
    with pytest.raises(ValueError, match="img_extra"):
        build_view_transforms(cfg, ("img", "img_extra"))


# ---- CoOp, CoCoOp, zero-shot --------------------------------------------------------------------------------

def test_coop_learns_only_its_context_and_class_specific_context_has_one_per_class(vit):
    torch.manual_seed(0)
    learner = CoOpPromptLearner(init_context(vit, 4, "", n_cls=len(CLASSNAMES)))
    net = CoOpNet(vit, learner, ClassPrompts(vit, CLASSNAMES, 4, position="front"))
    assert [n for n, p in net.named_parameters() if p.requires_grad] == ["prompt_learner.ctx"]
    images = torch.randn(2, 3, 32, 32)
    F.cross_entropy(net(images), torch.tensor([0, 2])).backward()
    assert learner.ctx.shape == (3, 4, vit.text_width) and learner.ctx.grad.abs().sum(dim=(1, 2)).min() > 0


def test_cocoop_training_and_chunked_evaluation_compute_the_same_logits(vit):
    torch.manual_seed(0)
    learner = CoCoOpPromptLearner(init_context(vit, 4, ""), vit.embed_dim, vit.text_width)
    assert learner.meta_net[0].out_features == max(1, vit.embed_dim // 16)
    net = CoCoOpNet(vit, learner, ClassPrompts(vit, CLASSNAMES, 4), eval_chunk=2)
    images = torch.randn(3, 3, 32, 32)
    train_logits = net.training_logits(images)
    torch.testing.assert_close(net.logits(images), train_logits.detach(), rtol=1e-5, atol=1e-5)
    F.cross_entropy(train_logits, torch.tensor([0, 1, 2])).backward()
    assert learner.ctx.grad.abs().sum() > 0 and learner.meta_net[-1].bias.grad.abs().sum() > 0


def test_zeroshot_classifier_scores_images_against_the_templates(vit):
    zs = ZeroshotClassifier(vit, CLASSNAMES, "a photo of a {}.")
    assert "text_features" not in zs.state_dict() and not any(p.requires_grad for p in zs.parameters())
    images = torch.randn(2, 3, 32, 32)
    text = F.normalize(vit.encode_text(clip.tokenize(["a photo of a sea lion."])).float(), dim=-1)[0]
    image = F.normalize(vit.encode_image(images).float(), dim=-1)
    torch.testing.assert_close(zs(images)[:, 1], vit.logit_scale.exp() * image @ text, rtol=1e-5, atol=1e-5)


# ---- end to end through train.py ----------------------------------------------------------------------------

def run_train(*argvs):
    """Run train.py's main() once per argv list, in one fresh process (one import of torch and CLIP)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    driver = "import sys, train\nfor argv in eval(sys.argv[1]):\n    train.main(argv)\n"
    return subprocess.run(
        [sys.executable, "-c", driver, repr([list(a) for a in argvs])],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
    )


def read_log(directory):
    with open(os.path.join(directory, "log.txt")) as f:
        return f.read()


def registered_methods() -> list[str]:
    """Every trainer the ``trainers`` package registers (test modules may register toys of their own)."""
    import trainers  # noqa: F401  (registers every method)
    from dassl.engine import TRAINER_REGISTRY

    names = TRAINER_REGISTRY.registered_names()
    return sorted(n for n in names if TRAINER_REGISTRY.get(n).__module__.startswith("trainers."))


def training_methods() -> list[str]:
    """The registered methods that have a training step (all but the ``EVAL_ONLY`` ones)."""
    from dassl.engine import TRAINER_REGISTRY

    return [n for n in registered_methods() if not TRAINER_REGISTRY.get(n).EVAL_ONLY]


def tiny_config(trainer: str) -> str:
    """``configs/trainers/<Name>/tiny.yaml``: by convention every registered method ships one for these tests."""
    path = os.path.join(REPO, "configs", "trainers", trainer, "tiny.yaml")
    assert os.path.isfile(path), (
        f"trainer {trainer} is registered but has no {os.path.relpath(path, REPO)}; every method needs a tiny "
        "config (the tiny CLIP's 32x32 input, a few steps) so that the registry-wide tests can run it"
    )
    return path


@pytest.mark.parametrize("trainer", registered_methods())
def test_trainer_runs_one_epoch_and_evaluates_through_train_py(trainer, tiny_clip_path, fake_data_root, tmp_path):
    """Train on the base classes, evaluate; then evaluate that checkpoint on the new classes (another class set)."""
    from dassl.engine import TRAINER_REGISTRY

    eval_only = TRAINER_REGISTRY.get(trainer).EVAL_ONLY
    out, new = tmp_path / "out", tmp_path / "new"
    common = [
        "--root", fake_data_root, "--trainer", trainer, "--seed", "1",
        "--dataset-config-file", os.path.join(REPO, "configs", "datasets", "caltech101.yaml"),
        "--config-file", tiny_config(trainer),
    ]
    opts = ["MODEL.BACKBONE.NAME", tiny_clip_path, "DATASET.NUM_SHOTS", "2"]
    extra = ["--eval-only"] if eval_only else []
    runs = [common + extra + ["--output-dir", str(out)] + opts + ["DATASET.SUBSAMPLE_CLASSES", "base"]]
    if not eval_only:
        runs.append(common + ["--eval-only", "--model-dir", str(out), "--load-epoch", "1", "--output-dir", str(new)]
                    + opts + ["DATASET.SUBSAMPLE_CLASSES", "new"])
    result = run_train(*runs)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    log = read_log(out)
    assert re.search(r"\* accuracy: \d+(\.\d)?%", log), log[-4000:]
    assert "Precision: fp32 (PREC fp32)" in log  # tiny configs pin the bit-exact path
    if eval_only:
        return
    assert "Finish training" in log
    checkpoint = out / "prompt_learner" / "model.pth.tar-1"
    assert checkpoint.is_file() and checkpoint.stat().st_size < 0.1 * os.path.getsize(tiny_clip_path)
    log = read_log(new)
    assert re.search(r"\* accuracy: \d+(\.\d)?%", log) and "Finish training" not in log, log[-4000:]


def test_a_registered_trainer_without_a_tiny_config_is_named():
    with pytest.raises(AssertionError, match="trainer NoSuchMethod is registered but has no configs/trainers"):
        tiny_config("NoSuchMethod")


@pytest.mark.parametrize("trainer", registered_methods())
def test_every_model_answers_to_losses_and_logits(trainer):
    """The two names the engine and tools call, on every method's model class."""
    from dassl.engine import TRAINER_REGISTRY
    from trainers.base import PromptModel, PromptTrainer

    cls = TRAINER_REGISTRY.get(trainer)
    assert issubclass(cls, PromptTrainer) and cls.CFG_NODE, trainer
    cfg = tiny_cfg(trainer)
    assert cfg.TRAINER[cls.CFG_NODE].PREC in ("auto", "fp32", "fp16", "amp", "bf16")
    model_classes = [c for c in vars(sys.modules[cls.__module__]).values()
                     if isinstance(c, type) and issubclass(c, PromptModel) and c is not PromptModel]
    assert model_classes, f"{cls.__module__} defines no PromptModel"
    for model_cls in model_classes:
        assert model_cls.logits is not PromptModel.logits, model_cls
        assert cls.EVAL_ONLY or model_cls.losses is not PromptModel.losses, model_cls


def test_cocoop_zero_init_meta_starts_at_the_hand_written_prompt_and_still_learns(vit):
    import trainers  # noqa: F401  (registers TRAINER.COCOOP)
    from dassl.config import get_cfg_default

    cfg = get_cfg_default()
    assert cfg.TRAINER.COCOOP.ZERO_INIT_META is False  # the public code's init stays the default
    cfg.TRAINER.COCOOP.ZERO_INIT_META = True
    cfg.TRAINER.COCOOP.N_CTX, cfg.TRAINER.COCOOP.CTX_INIT = 4, "a photo of a"
    torch.manual_seed(2)
    learner = CoCoOpPromptLearner.from_config(cfg, vit)
    net = CoCoOpNet(vit, learner, ClassPrompts(vit, CLASSNAMES, learner.n_ctx))
    # The tiny CLIP's meta-net has 2 ReLU units; with seed 2 some are active on these images (with seeds
    # 0, 1, 3 both are dead, so no layer could learn whatever the init), checked below.
    images, labels = torch.randn(8, 3, 32, 32), torch.arange(8) % len(CLASSNAMES)
    features = net._image_features(images)
    assert (learner.meta_net[:2](features) > 0).any()
    shift = learner.meta_net(features)
    assert torch.equal(shift, torch.zeros_like(shift))
    assert torch.equal(learner.contexts(features), learner.ctx.unsqueeze(0).expand(8, -1, -1))

    # Step 1: the last layer and ctx get gradient; once the last layer moves, the first one does too.
    opt = torch.optim.SGD(learner.parameters(), lr=0.1)
    F.cross_entropy(net.training_logits(images), labels).backward()
    assert learner.meta_net[-1].weight.grad.abs().sum() > 0 and learner.ctx.grad.abs().sum() > 0
    opt.step()
    opt.zero_grad()
    F.cross_entropy(net.training_logits(images), labels).backward()
    assert learner.meta_net[0].weight.grad.abs().sum() > 0
