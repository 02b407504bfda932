"""Shared fixtures: tiny CLIPs written to disk in OpenAI format, generated dataset trees."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def tiny_clip_path(tmp_path_factory) -> str:
    """A tiny random ViT CLIP saved as an OpenAI-format state dict."""
    from clip.tiny import build_tiny_clip, save_openai_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("clip") / "tiny-vit.pt"
    save_openai_checkpoint(build_tiny_clip("vit"), str(path))
    return str(path)


@pytest.fixture(scope="session")
def tiny_resnet_clip_path(tmp_path_factory) -> str:
    """A tiny random ResNet CLIP saved as an OpenAI-format state dict."""
    from clip.tiny import build_tiny_clip, save_openai_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("clip") / "tiny-rn.pt"
    save_openai_checkpoint(build_tiny_clip("resnet"), str(path))
    return str(path)


@pytest.fixture(scope="session")
def fake_data_root(tmp_path_factory) -> str:
    """A data root holding a tiny fake tree for every benchmark dataset layout."""
    from tests.fake_trees import make_fake_trees

    root = tmp_path_factory.mktemp("data")
    make_fake_trees(str(root))
    return str(root)
