"""clip/: names, loading from OpenAI-format files, tokenizer, per-layer image features, exact prompt encoding."""
import hashlib
import io

import open_clip
import pytest
import torch
from open_clip.transformer import QuickGELU, VisionTransformer

import clip
from clip import download, names, visual
from clip.checkpoint import build_clip_from_state_dict
from clip.tiny import build_tiny_clip, openai_state_dict, random_token_ids, save_openai_checkpoint

SOT, EOT = 49406, 49407


def _random_tokens(eot_positions: list[int], length: int = 77) -> torch.Tensor:
    return random_token_ids(eot_positions, length, seed=1)


@pytest.fixture(scope="module")
def b16_text_clip():
    """A random CLIP with ViT-B/16 text dims (width 512, 12 layers, 8 heads) and a tiny image tower."""
    torch.manual_seed(0)
    return build_tiny_clip("vit", embed_dim=512, text_width=512, text_layers=12, text_heads=8)


def test_available_models_are_openai_names():
    assert clip.available_models() == [
        "RN50", "RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B/32", "ViT-B/16", "ViT-L/14", "ViT-L/14@336px"]


@pytest.mark.parametrize("name, filename, vision", [
    ("ViT-B/16", "ViT-B-16.pt", {"width": 768, "patch_size": 16, "image_size": 224, "layers": 12}),
    ("ViT-L/14@336px", "ViT-L-14-336px.pt", {"width": 1024, "patch_size": 14, "image_size": 336, "layers": 24}),
    ("RN50", "RN50.pt", {"width": 64, "image_size": 224, "layers": [3, 4, 6, 3]}),
])
def test_names_map_to_quickgelu_configs(name, filename, vision):
    model = names.OPENAI_MODELS[name]
    config = open_clip.get_model_config(model.open_clip_config)
    assert model.open_clip_config.endswith("-quickgelu") and config["quick_gelu"]
    assert {k: config["vision_cfg"][k] for k in vision} == vision
    assert model.filename == filename
    assert model.url.endswith(f"/{model.sha256}/{filename}")


def test_every_name_has_an_open_clip_config():
    for model in names.OPENAI_MODELS.values():
        assert open_clip.get_model_config(model.open_clip_config) is not None, model.name


@pytest.mark.parametrize("kind", ["vit", "resnet"])
@pytest.mark.parametrize("jit", [False, True])
def test_load_from_path_reproduces_the_saved_model(tmp_path, kind, jit):
    torch.manual_seed(0)
    original = build_tiny_clip(kind)
    path = tmp_path / "model.pt"
    save_openai_checkpoint(original, path, jit=jit)
    model = clip.load(str(path))
    images = torch.randn(2, 3, 32, 32)
    tokens = clip.tokenize(["a photo of a dog.", "a cat"])
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(images), original.encode_image(images))
        torch.testing.assert_close(model.encode_text(tokens), original.encode_text(tokens), atol=1e-5, rtol=1e-5)
    assert model.visual_kind == kind and model.dtype == torch.float32


def test_fp16_state_dict_loads_into_fp32_model(tmp_path):
    torch.manual_seed(0)
    original = build_tiny_clip("vit")
    path = tmp_path / "half.pt"
    save_openai_checkpoint(original, path, half=True)
    assert torch.load(path)["visual.proj"].dtype == torch.float16
    model = clip.load(str(path))
    assert model.dtype == torch.float32 and model.visual.proj.dtype == torch.float32
    torch.testing.assert_close(model.visual.proj, original.visual.proj.half().float(), atol=0, rtol=0)


def test_shared_fixtures_load(tiny_clip_path, tiny_resnet_clip_path):
    assert clip.load(tiny_clip_path).visual_kind == "vit"
    assert clip.load(tiny_resnet_clip_path).visual_kind == "resnet"


def test_backbone_attributes_come_from_the_model():
    torch.manual_seed(0)
    model = clip.CLIPBackbone(build_tiny_clip("vit", embed_dim=24, text_width=40, vision_width=36, vision_layers=3))
    assert (model.embed_dim, model.text_width, model.context_length, model.image_size) == (24, 40, 77, 32)
    assert model.visual_layer_widths == [36, 36, 36]
    assert model.token_embedding(torch.tensor([[1, 2]])).shape == (1, 2, 40)
    assert model.logit_scale.ndim == 0


def test_backbone_is_frozen_and_stays_in_eval_mode():
    model = clip.CLIPBackbone(build_tiny_clip("resnet"))
    model.train()
    assert not model.training and not any(m.training for m in model.modules())
    assert not any(p.requires_grad for p in model.parameters())


def test_tokenize_openai_ids_padding_and_truncation():
    ids = clip.tokenize("a photo of a dog.")
    assert ids.dtype == torch.long and ids.shape == (1, 77)
    assert ids[0, :8].tolist() == [SOT, 320, 1125, 539, 320, 1929, 269, EOT]
    assert not ids[0, 8:].any()
    long_ids = clip.tokenize(["word " * 100], context_length=10)
    assert long_ids.shape == (1, 10) and long_ids[0, -1] == EOT and long_ids[0, 0] == SOT


def test_vit_b16_layer_shapes_and_feature():
    torch.manual_seed(0)
    vit = VisionTransformer(image_size=224, patch_size=16, width=768, layers=12, heads=12, mlp_ratio=4.0,
                            output_dim=512, act_layer=QuickGELU).eval()
    image = torch.randn(1, 3, 224, 224)
    tower = visual.ViTTower(vit)
    with torch.no_grad():
        feature, layers = visual.forward_with_layers(tower, image)
        reference = vit(image)
    assert [tuple(t.shape) for t in layers] == [(1, 197, 768)] * 12
    assert visual.layer_widths(tower) == [768] * 12
    torch.testing.assert_close(feature, reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["vit", "resnet"])
def test_encode_image_with_layers_matches_encode_image(kind):
    torch.manual_seed(0)
    model = clip.CLIPBackbone(build_tiny_clip(kind))
    images = torch.randn(3, 3, 32, 32)
    feature, layers = model.encode_image_with_layers(images)
    torch.testing.assert_close(feature, model.encode_image(images), atol=1e-5, rtol=1e-5)
    assert feature.shape == (3, model.embed_dim)
    assert len(layers) == len(model.visual_layer_widths)
    for layer, width in zip(layers, model.visual_layer_widths):
        assert layer.shape[0] == 3 and layer.shape[1 if kind == "resnet" else 2] == width
    if kind == "resnet":
        assert [t.shape[-1] for t in layers] == [8, 4, 2, 1]  # stem /4, then stages /1, /2, /2, /2
    else:
        assert layers[-1].shape[1] == 1 + (32 // 8) ** 2  # CLS + patches
        # The last block's CLS token, through ln_post and proj, is the image feature.
        torch.testing.assert_close(model.visual.ln_post(layers[-1][:, 0]) @ model.visual.proj, feature)


@pytest.mark.parametrize("pool_type, final_ln_after_pool, batch_first", [
    ("avg", False, True), ("avg", True, True), ("tok", True, True), ("tok", False, False),
])
def test_vit_pooling_variants_and_layouts_match_open_clip(pool_type, final_ln_after_pool, batch_first):
    torch.manual_seed(0)
    vit = build_tiny_clip("vit").visual
    vit.pool_type, vit.final_ln_after_pool = pool_type, final_ln_after_pool
    vit.transformer.batch_first = batch_first
    for block in vit.transformer.resblocks:
        block.attn.batch_first = batch_first
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feature, layers = visual.forward_with_layers(visual.ViTTower(vit), images)
        torch.testing.assert_close(feature, vit(images), atol=1e-5, rtol=1e-5)
    assert layers[0].shape == (2, 17, 48)  # always [B, T, width], whatever the blocks' layout


def test_encode_prompts_equals_open_clip_with_and_without_cut(b16_text_clip):
    model = clip.CLIPBackbone(b16_text_clip)
    tokens = _random_tokens([3, 9, 17, 5])
    embeddings = model.token_embedding(tokens)
    with torch.no_grad():
        reference = b16_text_clip.encode_text(tokens)
        cut = model.encode_prompts(embeddings, tokens, truncate=True)
        uncut = model.encode_prompts(embeddings, tokens, truncate=False)
    torch.testing.assert_close(cut, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(uncut, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.encode_text(tokens), reference, atol=1e-5, rtol=1e-5)


def test_prompt_gradients_flow_and_match_with_cut():
    torch.manual_seed(0)
    model = clip.CLIPBackbone(build_tiny_clip("vit"))
    tokens = _random_tokens([4, 11, 7])
    grads = []
    for truncate in (True, False):
        prompts = model.token_embedding(tokens).clone().requires_grad_(True)
        model.encode_prompts(prompts, tokens, truncate=truncate).square().sum().backward()
        grads.append(prompts.grad)
    assert grads[0][:, :12].abs().sum() > 0
    # Tokens after a prompt's EOT cannot influence its feature: zero gradient there, cut or not.
    assert grads[0][0, 5:].abs().max() == 0
    # Token embeddings are small (std 0.02) and LayerNorm scales gradients up: compare relative to their size.
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5 * grads[1].abs().max().item(), rtol=1e-5)


def test_encode_prompts_rejects_mismatched_shapes():
    model = clip.CLIPBackbone(build_tiny_clip("vit"))
    tokens = _random_tokens([4, 6])
    with pytest.raises(ValueError, match=r"tokenized has shape \[2, 77\]"):
        model.encode_prompts(torch.zeros(2, 70, model.text_width), tokens)
    with pytest.raises(ValueError, match=r"expected \[N, L<=77, 32\]"):
        model.encode_prompts(torch.zeros(2, 77, 16), tokens)


def test_offline_missing_weights_names_file_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIP_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise AssertionError("offline load must not try the network")

    monkeypatch.setattr(download.urllib.request, "urlopen", no_network)
    with pytest.raises(clip.WeightsNotFoundError) as error:
        clip.load("ViT-B/16")
    assert "'ViT-B-16.pt'" in str(error.value) and f"'{tmp_path}'" in str(error.value)


class _FakeResponse(io.BytesIO):
    headers = {"Content-Length": "6"}


@pytest.mark.parametrize("matches", [True, False])
def test_download_keeps_only_files_with_the_right_sha256(tmp_path, monkeypatch, matches):
    payload = b"abcdef"
    sha = hashlib.sha256(payload if matches else b"other").hexdigest()
    monkeypatch.setenv("CLIP_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(download.urllib.request, "urlopen", lambda url, timeout: _FakeResponse(payload))
    model = names.OpenAIModel("Fake", "ViT-B-16-quickgelu", sha, "Fake.pt")
    if matches:
        assert download.openai_checkpoint(model).read_bytes() == payload
    else:
        with pytest.raises(RuntimeError, match="SHA-256"):
            download.openai_checkpoint(model)
        assert list(tmp_path.iterdir()) == []


def test_unknown_names_and_missing_paths_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="expected an OpenAI name"):
        clip.load("ViT-B-17")
    with pytest.raises(FileNotFoundError, match="not an OpenAI name"):
        clip.load("ViT-B/17")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        clip.load(str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="precision 'fp8'"):
        clip.load("RN50", precision="fp8")


def test_low_precision_on_cpu_warns_and_uses_fp32(tiny_clip_path):
    with pytest.warns(UserWarning, match="using fp32"):
        model = clip.load(tiny_clip_path, precision="fp16")
    assert model.dtype == torch.float32


def test_low_precision_stays_on_cpu_without_the_fallback(tiny_clip_path, recwarn):
    model = clip.load(tiny_clip_path, precision="fp16", cpu_fallback=False)
    assert {p.dtype for p in model.parameters()} == {torch.float16} and not recwarn.list
    image = torch.randn(1, 3, model.image_size, model.image_size, dtype=torch.float16)
    assert model.encode_image(image).dtype == torch.float16  # torch runs fp16 on a CPU


def test_heads_must_be_stored_when_not_64_wide():
    weights = openai_state_dict(build_tiny_clip("vit"))
    del weights["text_heads"]
    with pytest.raises(ValueError, match="text attention heads .* width 32"):
        build_clip_from_state_dict(weights)
