"""OpenAI CLIP model names: their open_clip configs, cache file names and download URLs."""
from __future__ import annotations

from dataclasses import dataclass

_OPENAI_BASE_URL = "https://openaipublic.azureedge.net/clip/models"


@dataclass(frozen=True)
class OpenAIModel:
    """One released OpenAI checkpoint: the name users type and where its weights live."""

    name: str
    open_clip_config: str
    sha256: str
    filename: str

    @property
    def url(self) -> str:
        # OpenAI's URLs carry the file's SHA-256 as the folder name.
        return f"{_OPENAI_BASE_URL}/{self.sha256}/{self.filename}"


def _entry(name: str, config: str, sha256: str) -> OpenAIModel:
    # OpenAI's file name is the model name with "/" and "@" replaced by "-".
    filename = name.replace("/", "-").replace("@", "-") + ".pt"
    return OpenAIModel(name, config, sha256, filename)


OPENAI_MODELS: dict[str, OpenAIModel] = {
    m.name: m
    for m in (
        _entry("RN50", "RN50-quickgelu", "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762"),
        _entry("RN101", "RN101-quickgelu", "8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599"),
        _entry("RN50x4", "RN50x4-quickgelu", "7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd"),
        _entry("RN50x16", "RN50x16-quickgelu", "52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa"),
        _entry("RN50x64", "RN50x64-quickgelu", "be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c"),
        _entry("ViT-B/32", "ViT-B-32-quickgelu", "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"),
        _entry("ViT-B/16", "ViT-B-16-quickgelu", "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f"),
        _entry("ViT-L/14", "ViT-L-14-quickgelu", "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836"),
        _entry("ViT-L/14@336px", "ViT-L-14-336-quickgelu",
               "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02"),
    )
}


def available_models() -> list[str]:
    """The OpenAI model names that `clip.load` accepts (besides paths and open_clip `ARCH:TAG`)."""
    return list(OPENAI_MODELS)
