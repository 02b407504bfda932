"""clip/ prompt hooks: frozen equivalence, deep-prompt positions layer by layer, exact truncation, OpenAI-style code."""
import pytest
import torch

import clip
from clip import text as text_tower
from clip import visual as visual_tower
from clip.tiny import build_tiny_clip, random_token_ids

N_CTX = 2


def _tokens(eot_positions: list[int], length: int = 77) -> torch.Tensor:
    return random_token_ids(eot_positions, length, seed=3)


@pytest.fixture(scope="module")
def tiny():
    """(open_clip model, backbone built from it): 3 text and 3 vision blocks."""
    torch.manual_seed(0)
    model = build_tiny_clip("vit", text_layers=3, vision_layers=3)
    return model, clip.CLIPBackbone(model)


def _prompts(count: int, n: int, width: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, width, generator=g) for _ in range(count)]


class BlockInputs:
    """Records the input of every block call of one tower (monkeypatched block function)."""

    def __init__(self, monkeypatch, module, name: str) -> None:
        self.inputs, self.outputs = [], []
        original = getattr(module, name)

        def record(block, x, *args, **kwargs):
            out = original(block, x, *args, **kwargs)
            self.inputs.append(x.detach().clone())
            self.outputs.append(out.detach().clone())
            return out

        monkeypatch.setattr(module, name, record)


# --- no prompts: exactly the frozen CLIP -----------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["vit", "resnet"])
def test_no_prompts_equals_open_clip(kind):
    torch.manual_seed(0)
    model = build_tiny_clip(kind, text_layers=3)
    backbone = clip.CLIPBackbone(model)
    images = torch.randn(3, 3, 32, 32)
    tokens = _tokens([3, 9, 17])
    with torch.no_grad():
        torch.testing.assert_close(backbone.encode_image(images), model.encode_image(images), atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(backbone.encode_text(tokens), model.encode_text(tokens), atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(backbone.encode_image_with_layers(images)[0], model.encode_image(images),
                                   atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(backbone.visual(images), model.encode_image(images), atol=1e-6, rtol=1e-6)


def test_encode_image_and_with_layers_run_the_same_block_loop(tiny, monkeypatch):
    _, backbone = tiny
    calls = BlockInputs(monkeypatch, visual_tower, "attention_block")
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        plain = backbone.encode_image(images)
        with_layers, layers = backbone.encode_image_with_layers(images)
    assert len(calls.inputs) == 2 * 3
    torch.testing.assert_close(plain, with_layers, atol=0, rtol=0)
    for layer, output in zip(layers, calls.outputs[3:]):
        torch.testing.assert_close(layer, output, atol=0, rtol=0)


# --- text deep prompts -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("depth", [1, 2, 3])
def test_text_deep_prompts_replace_positions_1_to_n_below_the_depth(tiny, monkeypatch, depth):
    _, backbone = tiny
    tokens = _tokens([5, 8])
    embeddings = backbone.token_embedding(tokens).detach()
    embeddings[:, 1:1 + N_CTX] = _prompts(1, N_CTX, backbone.text_width, seed=9)[0]  # the shallow prompt
    deep = _prompts(depth - 1, N_CTX, backbone.text_width, seed=depth)
    calls = BlockInputs(monkeypatch, text_tower, "causal_block")
    with torch.no_grad():
        backbone.encode_prompts(embeddings, tokens, truncate=False, deep_prompts=deep)
    assert len(calls.inputs) == backbone.text_layers
    positions = slice(1, 1 + N_CTX)
    # Block 0 sees the shallow prompt with its positional embedding, like every input token.
    torch.testing.assert_close(calls.inputs[0], embeddings + backbone.positional_embedding)
    for layer in range(1, backbone.text_layers):
        seen = calls.inputs[layer]
        if layer < depth:  # replaced, raw (no positional embedding)
            torch.testing.assert_close(seen[:, positions], deep[layer - 1].expand(2, -1, -1), atol=0, rtol=0)
        else:  # kept: the previous block's outputs
            torch.testing.assert_close(seen[:, positions], calls.outputs[layer - 1][:, positions], atol=0, rtol=0)
        # Every other position is always the previous block's output.
        torch.testing.assert_close(seen[:, 1 + N_CTX:], calls.outputs[layer - 1][:, 1 + N_CTX:], atol=0, rtol=0)
        torch.testing.assert_close(seen[:, :1], calls.outputs[layer - 1][:, :1], atol=0, rtol=0)


def test_text_truncation_stays_exact_with_deep_prompts(tiny):
    _, backbone = tiny
    tokens = _tokens([4, 11, 7])
    shallow = backbone.token_embedding(tokens).detach()
    deep = [p.requires_grad_(True) for p in _prompts(2, N_CTX, backbone.text_width, seed=4)]
    results = []
    for truncate in (True, False):
        features = backbone.encode_prompts(shallow, tokens, truncate=truncate, deep_prompts=deep)
        grads = torch.autograd.grad(features.square().sum(), deep)
        results.append((features.detach(), grads))
    (cut, cut_grads), (full, full_grads) = results
    torch.testing.assert_close(cut, full, atol=1e-5, rtol=1e-5)
    for a, b in zip(cut_grads, full_grads):
        assert b.abs().sum() > 0
        torch.testing.assert_close(a, b, atol=1e-5 * b.abs().max().item(), rtol=1e-5)


def test_per_prompt_deep_text_prompts_equal_one_call_per_prompt(tiny):
    _, backbone = tiny
    tokens = _tokens([5, 9])
    embeddings = backbone.token_embedding(tokens).detach()
    per_row = torch.randn(2, 1, N_CTX, backbone.text_width)
    with torch.no_grad():
        batched = backbone.encode_prompts(embeddings, tokens, deep_prompts=[per_row[:, 0]])
        single = [backbone.encode_prompts(embeddings[r:r + 1], tokens[r:r + 1], deep_prompts=[per_row[r, 0]])
                  for r in range(2)]
    torch.testing.assert_close(batched, torch.cat(single), atol=1e-5, rtol=1e-5)


def test_text_prompt_errors_name_the_depth_and_range(tiny):
    _, backbone = tiny
    tokens = _tokens([5, 9])
    embeddings = backbone.token_embedding(tokens)
    with pytest.raises(ValueError, match=r"text prompt depth 4 .* 3 blocks; valid depths: 1\.\.3"):
        backbone.encode_prompts(embeddings, tokens, deep_prompts=_prompts(3, N_CTX, backbone.text_width, 0))
    with pytest.raises(ValueError, match=r"replace positions 1\.\.5, but a prompt's EOT is at position 5"):
        backbone.encode_prompts(embeddings, tokens, deep_prompts=_prompts(1, 5, backbone.text_width, 0))
    with pytest.raises(ValueError, match=r"deep_prompts\[1\] \(block 2\) has shape \[3, 32\]"):
        backbone.encode_prompts(embeddings, tokens, deep_prompts=[torch.zeros(2, 32), torch.zeros(3, 32)])


# --- vision prompts --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("depth", [1, 2, 3])
def test_vision_prompts_join_before_ln_pre_and_replace_the_last_n_below_the_depth(tiny, monkeypatch, depth):
    _, backbone = tiny
    n, width = 3, backbone.vision_width
    shallow, *deep = _prompts(depth, n, width, seed=10 + depth)
    calls = BlockInputs(monkeypatch, visual_tower, "attention_block")
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feature, layers = backbone.encode_image_with_layers(images, clip.VisionPrompts(shallow, deep))
        _, frozen_layers = backbone.encode_image_with_layers(images)
    patches = 1 + (32 // 8) ** 2
    assert layers[0].shape == (2, patches + n, width)
    prompt_rows = slice(patches, patches + n)
    visual = backbone.visual
    # Block 0: [CLS ; patches] as frozen CLIP, then the shallow prompt without positional embedding, all through
    # ln_pre (per token, so the image tokens are exactly the frozen ones).
    torch.testing.assert_close(calls.inputs[0][:, prompt_rows], visual.ln_pre(shallow).expand(2, -1, -1))
    torch.testing.assert_close(calls.inputs[0][:, :patches], calls.inputs[3][:, :patches], atol=0, rtol=0)
    for layer in range(1, backbone.vision_layers):
        seen = calls.inputs[layer]
        expected = deep[layer - 1].expand(2, -1, -1) if layer < depth else layers[layer - 1][:, prompt_rows]
        torch.testing.assert_close(seen[:, prompt_rows], expected, atol=0, rtol=0)
        torch.testing.assert_close(seen[:, :patches], layers[layer - 1][:, :patches], atol=0, rtol=0)
    # Only the class token is read out, through ln_post and proj.
    torch.testing.assert_close(visual.ln_post(layers[-1][:, 0]) @ visual.proj, feature)
    assert not torch.allclose(layers[-1][:, :patches], frozen_layers[-1])  # prompts do change the image tokens


def test_vision_prompt_gradients_reach_every_prompted_layer(tiny):
    _, backbone = tiny
    prompts = [p.requires_grad_(True) for p in _prompts(3, 2, backbone.vision_width, seed=1)]
    features = backbone.encode_image(torch.randn(2, 3, 32, 32), clip.VisionPrompts(prompts[0], prompts[1:]))
    grads = torch.autograd.grad(features.square().sum(), prompts)
    assert all(g.abs().sum() > 0 for g in grads)


def test_per_sample_vision_prompts_equal_one_call_per_image(tiny):
    _, backbone = tiny
    images = torch.randn(2, 3, 32, 32)
    shallow, deep = torch.randn(2, 2, backbone.vision_width), torch.randn(2, 2, backbone.vision_width)
    with torch.no_grad():
        batched = backbone.encode_image(images, clip.VisionPrompts(shallow, [deep]))
        single = [backbone.encode_image(images[b:b + 1], clip.VisionPrompts(shallow[b], [deep[b]])) for b in range(2)]
    torch.testing.assert_close(batched, torch.cat(single), atol=1e-5, rtol=1e-5)


def test_vision_prompt_errors_are_one_line(tiny):
    _, backbone = tiny
    images = torch.randn(1, 3, 32, 32)
    too_deep = clip.VisionPrompts(torch.zeros(2, 48), [torch.zeros(2, 48)] * 3)
    with pytest.raises(ValueError, match=r"vision prompt depth 4 .* 3 blocks; valid depths: 1\.\.3") as error:
        backbone.encode_image(images, too_deep)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match=r"VisionPrompts.deep\[0\] has shape \[3, 48\]"):
        backbone.encode_image(images, clip.VisionPrompts(torch.zeros(2, 48), [torch.zeros(3, 48)]))
    resnet = clip.CLIPBackbone(build_tiny_clip("resnet"))
    with pytest.raises(ValueError, match="vision prompts need a ViT image tower; this backbone's is a ResNet"):
        resnet.encode_image(images, clip.VisionPrompts(torch.zeros(2, 48)))
    with pytest.raises(ValueError, match="vision_width needs a ViT image tower"):
        _ = resnet.vision_width


# --- code written against OpenAI CLIP --------------------------------------------------------------------------

class OpenAIStyleTextEncoder(torch.nn.Module):
    """CoOp's upstream TextEncoder pattern: sequence-first transformer with the mask inside."""

    def __init__(self, clip_model):
        super().__init__()
        self.transformer = clip_model.transformer
        self.positional_embedding = clip_model.positional_embedding
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection
        self.dtype = clip_model.dtype

    def forward(self, prompts, tokenized_prompts):
        x = prompts + self.positional_embedding.type(self.dtype)
        x = x.permute(1, 0, 2)  # NLD -> LND
        x = self.transformer(x)
        x = x.permute(1, 0, 2)  # LND -> NLD
        x = self.ln_final(x).type(self.dtype)
        return x[torch.arange(x.shape[0]), tokenized_prompts.argmax(dim=-1)] @ self.text_projection


def openai_style_image_encoder(visual, image):
    """OpenAI's VisionTransformer.forward written out, as forks that insert vision prompts do."""
    x = visual.conv1(image)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = visual.class_embedding + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding
    x = visual.ln_pre(x).permute(1, 0, 2)  # NLD -> LND
    for block in visual.transformer.resblocks:  # block by block, as deep-prompt forks iterate
        x = block(x)
    return visual.ln_post(x.permute(1, 0, 2)[:, 0, :]) @ visual.proj


def test_openai_style_text_encoder_matches_encode_text(tiny):
    _, backbone = tiny
    tokens = clip.tokenize(["a photo of a dog.", "a cat.", "a very small red star on a table."])
    with torch.no_grad():
        ported = OpenAIStyleTextEncoder(backbone)(backbone.token_embedding(tokens), tokens)
        torch.testing.assert_close(ported, backbone.encode_text(tokens), atol=1e-5, rtol=1e-5)
        # Block by block, each text block applies its own causal mask, as OpenAI's do.
        x = (backbone.token_embedding(tokens) + backbone.positional_embedding).permute(1, 0, 2)
        for block in backbone.transformer.resblocks:
            x = block(x)
        torch.testing.assert_close(x.permute(1, 0, 2), backbone.transformer(
            (backbone.token_embedding(tokens) + backbone.positional_embedding).permute(1, 0, 2)).permute(1, 0, 2))
    mask = backbone.transformer.resblocks[0].attn_mask
    torch.testing.assert_close(mask, backbone.build_attention_mask())
    assert mask[0, 1] == float("-inf") and mask[1, 0] == 0 and mask.shape == (77, 77)


class CoOpTextEncoderWithoutPermute(OpenAIStyleTextEncoder):
    """A port that dropped CoOp's permute(1, 0, 2): batch-first prompts into the sequence-first transformer."""

    def forward(self, prompts, tokenized_prompts):
        x = prompts + self.positional_embedding.type(self.dtype)
        x = self.transformer(x)
        x = self.ln_final(x).type(self.dtype)
        return x[torch.arange(x.shape[0]), tokenized_prompts.argmax(dim=-1)] @ self.text_projection


def class_prompts(backbone, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """CoOp-style prompt embeddings [n_classes, 77, width] and their tokens, one class name each."""
    tokens = clip.tokenize([f"a photo of a class{i}." for i in range(n_classes)])
    return backbone.token_embedding(tokens), tokens


@pytest.mark.parametrize("n_classes", [5, 77], ids=["fewer-than-77-prompts", "exactly-77-prompts"])
def test_coop_text_encoder_without_the_permute_fails_loudly(tiny, n_classes):
    _, backbone = tiny
    embeddings, tokens = class_prompts(backbone, n_classes)
    with torch.no_grad():  # the upstream encoder, permutes kept, works at both sizes
        torch.testing.assert_close(OpenAIStyleTextEncoder(backbone)(embeddings, tokens),
                                   backbone.encode_text(tokens), atol=1e-5, rtol=1e-5)
    # 5 prompts: OpenAI's 77x77 mask rejects a length of 5; 77 prompts: the shape fits, the layout does not.
    expected = r"sequence-first \[77, N, width\].*x\.permute\(1, 0, 2\) before and after"
    with pytest.raises(ValueError, match=expected) as error:
        CoOpTextEncoderWithoutPermute(backbone)(embeddings, tokens)
    assert "\n" not in str(error.value)
    x = embeddings + backbone.positional_embedding  # block by block, as deep-prompt forks iterate
    with pytest.raises(ValueError, match=r"text block input .*" + expected):
        backbone.transformer.resblocks[0](x)


def test_text_transformer_takes_only_the_full_context_length(tiny):
    _, backbone = tiny
    tokens = clip.tokenize(["a cat.", "a dog."])
    x = (backbone.token_embedding(tokens) + backbone.positional_embedding).permute(1, 0, 2)  # [77, 2, width]
    with pytest.raises(ValueError, match=r"shape \[10, 2, 32\]; OpenAI's text tower takes sequence-first \[77, N"):
        backbone.transformer(x[:10])  # truncated: OpenAI's fixed mask fails here too
    with torch.no_grad():
        assert backbone.transformer(x).shape == x.shape
        assert backbone.transformer(torch.randn(77, 77, backbone.text_width)).shape == (77, 77, backbone.text_width)
        assert backbone.visual.transformer(torch.randn(5, 3, backbone.vision_width)).shape[0] == 5  # no mask there


def test_openai_style_image_encoder_matches_encode_image(tiny):
    _, backbone = tiny
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ported = openai_style_image_encoder(backbone.visual, images)
        torch.testing.assert_close(ported, backbone.encode_image(images), atol=1e-5, rtol=1e-5)
        lnd = torch.randn(17, 2, backbone.vision_width)
        torch.testing.assert_close(backbone.visual.transformer(lnd).shape, lnd.shape)
    assert backbone.visual.input_resolution == 32 and backbone.visual.output_dim == backbone.embed_dim
    assert backbone.visual.transformer.resblocks[0].attn_mask is None


def test_fork_calling_conventions_fail_loudly(tiny):
    _, backbone = tiny
    x = torch.zeros(77, 2, backbone.text_width)
    with pytest.raises(TypeError, match=r"encode_prompts\(\.\.\., deep_prompts=\.\.\.\)"):
        backbone.transformer([x, [torch.zeros(2, backbone.text_width)], 0])  # MaPLe-fork call
    with pytest.raises(TypeError, match="applies its own mask"):
        backbone.transformer(x, attn_mask=backbone.build_attention_mask())  # open_clip-style call
    with pytest.raises(ValueError, match=r"sequence-first \[77, N, width\] \(its causal mask is 77x77\)"):
        backbone.transformer(torch.zeros(78, 77, backbone.text_width))  # batch-first, 78 prompts
    with pytest.raises(TypeError, match="vision prompts go through"):
        backbone.visual(torch.zeros(1, 3, 32, 32), torch.zeros(2, 48), [])  # MaPLe-fork image encoder call


def test_backbone_leaves_the_open_clip_model_it_wraps_working():
    torch.manual_seed(0)
    # Frozen and in eval mode first, as the backbone leaves its (shared) modules: with frozen weights
    # nn.MultiheadAttention takes its fused path, which differs from the other one in the last bits on some CPUs
    # (1e-6 on an AMD EPYC with AVX2); like is compared with like, so any real change still shows.
    model = build_tiny_clip("vit").eval().requires_grad_(False)
    images, tokens = torch.randn(2, 3, 32, 32), _tokens([4, 6])
    with torch.no_grad():
        before = model.encode_image(images), model.encode_text(tokens)
        clip.CLIPBackbone(model)
        after = model.encode_image(images), model.encode_text(tokens)
    for a, b in zip(before, after):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
