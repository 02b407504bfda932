"""bf16 runs keep the backbone's matrix weights in bf16: the same numbers as fp32 weights under autocast, half the memory."""
import copy
import logging
import os

import pytest
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile
from yacs.config import CfgNode

import clip
from tests.test_clip_loading import _balanced_tiny_clip, _peak_live_bytes
from tests.test_trainers import REPO, registered_methods, tiny_config
from trainers.backbone_loading import load_clip

BF16 = torch.autocast("cpu", dtype=torch.bfloat16)


def _outputs(backbone: clip.CLIPBackbone) -> list[torch.Tensor]:
    """Every tower entry point on fixed inputs: images with and without vision prompts, token ids, deep text prompts."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 32, 32, generator=gen)
    tokens = clip.tokenize(["a photo of a cat.", "a dog"], context_length=backbone.context_length)
    outputs = [backbone.encode_image(images), backbone.encode_text(tokens)]
    if backbone.visual_kind == "vit":
        width = backbone.vision_width
        prompts = clip.VisionPrompts(torch.randn(2, width, generator=gen), [torch.randn(2, width, generator=gen)])
        features, layers = backbone.encode_image_with_layers(images, prompts)
        deep_text = [torch.randn(2, backbone.text_width, generator=gen)]
        outputs += [features, *layers,
                    backbone.encode_prompts(backbone.token_embedding(tokens), tokens, deep_prompts=deep_text)]
    return outputs


@pytest.mark.parametrize("kind", ["vit", "resnet"])
def test_bf16_matrix_weights_give_exactly_what_autocast_gives_with_fp32_weights(kind, tiny_clip_path,
                                                                               tiny_resnet_clip_path):
    fp32 = clip.load(tiny_clip_path if kind == "vit" else tiny_resnet_clip_path)
    stored = copy.deepcopy(fp32)
    freed = stored.store_matmul_weights(torch.bfloat16)
    with torch.no_grad():
        with BF16:
            reference = _outputs(fp32)
            inside = _outputs(stored)
        outside = _outputs(stored)  # the backbone enters the autocast its weights need by itself
    for ref, a, b in zip(reference, inside, outside):
        assert torch.equal(ref, a) and torch.equal(ref, b)
    bf16_bytes = sum(p.numel() * 2 for p in stored.parameters() if p.dtype == torch.bfloat16)
    assert freed == bf16_bytes > 0  # each of those parameters went from 4 bytes to 2
    assert sum(p.numel() * p.element_size() for p in stored.parameters()) == \
        sum(p.numel() * p.element_size() for p in fp32.parameters()) - freed


def test_only_weights_that_matrix_products_read_change_dtype(tiny_clip_path):
    backbone = clip.load(tiny_clip_path)
    backbone.store_matmul_weights(torch.bfloat16)
    block = backbone.visual.transformer.resblocks[0]
    low = [block.attn.in_proj_weight, block.attn.out_proj.weight, block.mlp.c_fc.weight, block.mlp.c_fc.bias,
           backbone.visual.conv1.weight, backbone.visual.proj, backbone.text_projection,
           backbone.transformer.resblocks[0].mlp.c_proj.weight]
    kept = [block.ln_1.weight, backbone.visual.ln_post.bias, backbone.visual.class_embedding,
            backbone.visual.positional_embedding, backbone.positional_embedding, backbone.token_embedding.weight,
            backbone.ln_final.weight, backbone.logit_scale]
    assert all(p.dtype == torch.bfloat16 for p in low)
    assert all(p.dtype == torch.float32 for p in kept)
    assert backbone.dtype == torch.float32 and not any(p.requires_grad for p in backbone.parameters())
    # Every parameter is reachable once: the shared pieces (open_clip's and OpenAI-named views) stay shared.
    assert len({id(p) for p in backbone.parameters()}) == len(list(backbone.parameters()))
    assert isinstance(backbone.visual.proj, nn.Parameter)


@pytest.mark.parametrize("resolved, dtype", [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_load_clip_stores_bf16_weights_only_for_a_bf16_run(tiny_clip_path, caplog, resolved, dtype):
    cfg = CfgNode({"MODEL": CfgNode({"BACKBONE": CfgNode({"NAME": tiny_clip_path})})})
    caplog.set_level(logging.INFO)
    backbone = load_clip(cfg, "cpu", "auto", resolved)
    assert backbone.visual.conv1.weight.dtype == dtype and backbone.ln_final.weight.dtype == torch.float32
    assert ("kept in bf16" in caplog.text) == (resolved == "bf16")


def test_a_checkpoint_loads_with_bf16_matrix_weights_without_an_fp32_copy_of_them(tmp_path):
    model = _balanced_tiny_clip()
    weights = model.state_dict()
    largest_fp16 = max(t.numel() * 2 for t in weights.values())
    path = tmp_path / "half.pt"
    clip.tiny.save_openai_checkpoint(model, path, half=True)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        loaded = clip.load(str(path), matmul_dtype=torch.bfloat16)
    stored = clip.load(str(path))
    stored.store_matmul_weights(torch.bfloat16)
    for (name, a), (_, b) in zip(loaded.state_dict().items(), stored.state_dict().items()):
        assert a.dtype == b.dtype and torch.equal(a, b), name
    assert loaded.matmul_dtype == torch.bfloat16
    loaded_bytes = sum(t.numel() * t.element_size() for t in loaded.state_dict().values())
    fp32_bytes = sum(t.numel() * 4 for t in weights.values())
    assert loaded_bytes < 0.7 * fp32_bytes  # most of the model is matrix weights
    # The loaded model plus the one fp16 tensor being converted: the matrix weights never exist in fp32.
    assert _peak_live_bytes(prof) <= loaded_bytes + largest_fp16 + 0.01 * fp32_bytes


@pytest.mark.parametrize("trainer", registered_methods())
def test_every_trainer_computes_the_same_with_bf16_matrix_weights(trainer, tiny_clip_path, fake_data_root, tmp_path,
                                                                  monkeypatch):
    """One bf16 training step (or, for an evaluation-only method, its logits) with the weights stored in bf16
    equals the same with fp32 weights under autocast: no method reads the backbone outside autocast."""
    import train
    from dassl.engine import TRAINER_REGISTRY, build_trainer
    from dassl.utils import set_random_seed

    argv = ["--root", fake_data_root, "--trainer", trainer, "--seed", "1", "--output-dir", str(tmp_path),
            "--dataset-config-file", os.path.join(REPO, "configs", "datasets", "caltech101.yaml"),
            "--config-file", tiny_config(trainer), "MODEL.BACKBONE.NAME", tiny_clip_path,
            "DATASET.NUM_SHOTS", "2", f"TRAINER.{TRAINER_REGISTRY.get(trainer).CFG_NODE}.PREC", "bf16"]
    cfg = train.setup_cfg(train.build_parser().parse_args(argv))
    dtypes = []

    def run() -> tuple[object, list[torch.Tensor]]:
        set_random_seed(1)
        built = build_trainer(cfg)
        batch = next(iter(built.train_loader_x))
        set_random_seed(2)
        dtypes.append(built.model.clip.visual.conv1.weight.dtype)
        if TRAINER_REGISTRY.get(trainer).EVAL_ONLY:
            return built.model_inference(built.parse_batch_test(batch)[0]), []
        return built.forward_backward(batch), [p.detach().clone() for p in built.model.parameters() if p.requires_grad]

    stored, stored_params = run()
    full_load = clip.load
    monkeypatch.setattr(clip, "load", lambda *a, matmul_dtype=None, **k: full_load(*a, **k))  # fp32 weights
    reference, reference_params = run()
    assert dtypes == [torch.bfloat16, torch.float32]
    if isinstance(stored, dict):
        assert stored == reference
    else:
        assert torch.equal(stored, reference)
    assert len(stored_params) == len(reference_params)
    assert all(torch.equal(a, b) for a, b in zip(stored_params, reference_params))
