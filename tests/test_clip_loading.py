"""Loading holds one copy of the weights: peak live tensor bytes during clip.load, as a ratio of the model's size."""
import torch
from torch.profiler import ProfilerActivity, profile

import clip
from clip.checkpoint import build_clip_from_state_dict, read_state_dict
from clip.tiny import build_tiny_clip, save_openai_checkpoint


def _peak_live_bytes(prof) -> int:
    """The largest sum of live CPU allocations during a profiled block (torch's allocator events, in order)."""
    # kineto's raw events carry every allocation (+bytes) and free (-bytes); the public summary merges them.
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def _balanced_tiny_clip():
    # A small vocabulary, so that no single tensor dominates the model (as in ViT-B/16, where the largest
    # tensor is 1/6 of the weights): the peak then tells one copy from two.
    torch.manual_seed(0)
    return build_tiny_clip("vit", vocab_size=1000, embed_dim=64, text_width=64, text_layers=3,
                           vision_width=64, vision_layers=3)


def test_fp16_checkpoint_loads_with_one_fp32_copy_at_a_time(tmp_path):
    model = _balanced_tiny_clip()
    weights = model.state_dict()
    model_bytes = sum(t.numel() * 4 for t in weights.values())
    largest_fp16 = max(t.numel() * 2 for t in weights.values())
    path = tmp_path / "half.pt"
    save_openai_checkpoint(model, path, half=True)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        backbone = clip.load(str(path))
    peak = _peak_live_bytes(prof)
    # The fp32 model plus the one fp16 tensor being converted; reading the whole checkpoint and then copying it
    # into a randomly initialised model (the previous loader) peaked at 1.5x the model.
    assert model_bytes <= peak <= model_bytes + largest_fp16 + 0.01 * model_bytes, (peak, model_bytes)
    assert largest_fp16 < 0.1 * model_bytes
    assert backbone.dtype == torch.float32


def test_built_model_is_complete_and_consumes_the_state_dict(tmp_path):
    model = _balanced_tiny_clip()
    path = tmp_path / "full.pt"
    save_openai_checkpoint(model, path)
    weights = read_state_dict(path)
    built = build_clip_from_state_dict(weights)
    assert weights == {}  # every tensor was moved into the model
    assert not any(t.is_meta for t in [*built.parameters(), *built.buffers()])
    tokens = torch.randint(1, 999, (2, 77))
    tokens[:, 9] = 999  # EOT = the largest id
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # open_clip's own forward, which reads the derived causal mask buffer
        torch.testing.assert_close(built.encode_text(tokens), model.encode_text(tokens), atol=0, rtol=0)
        torch.testing.assert_close(built.encode_image(images), model.encode_image(images), atol=0, rtol=0)
