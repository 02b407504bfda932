"""Benchmark the truncated text tower: forward+backward to prompt embeddings, cut vs uncut (77 tokens).

Builds a random text tower with OpenAI ViT-B/16's text dims in memory (no weights) and prints one JSON line.
    python tools/bench_text_encoder.py --n-prompts 120 --eot-max 20
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from clip import CLIPBackbone  # noqa: E402
from clip.tiny import build_tiny_clip  # noqa: E402

_SOT, _EOT = 49406, 49407


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-prompts", type=int, default=120)
    parser.add_argument("--eot-max", type=int, default=20, help="the longest prompt's EOT position")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per mode; the median is reported")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def text_backbone_b16() -> CLIPBackbone:
    """A random CLIP with ViT-B/16's text tower (width 512, 12 layers, 8 heads); the image tower is tiny."""
    return CLIPBackbone(build_tiny_clip("vit", embed_dim=512, text_width=512, text_layers=12, text_heads=8))


def random_prompts(n_prompts: int, eot_max: int, context_length: int, generator: torch.Generator) -> torch.Tensor:
    """Token ids [n, context_length] with EOT positions spread over [eot_max // 2, eot_max], the max reached."""
    eot = torch.randint(eot_max // 2, eot_max + 1, (n_prompts,), generator=generator)
    eot[0] = eot_max
    ids = torch.zeros(n_prompts, context_length, dtype=torch.long)
    for row, position in enumerate(eot.tolist()):
        ids[row, 0] = _SOT
        ids[row, 1:position] = torch.randint(1, _SOT, (position - 1,), generator=generator)
        ids[row, position] = _EOT
    return ids


def forward_backward_seconds(model: CLIPBackbone, embeddings: torch.Tensor, tokens: torch.Tensor,
                             truncate: bool) -> tuple[float, float]:
    """(wall, process CPU) seconds of one forward+backward pass to the prompt embeddings."""
    prompts = embeddings.clone().requires_grad_(True)
    wall, cpu = time.perf_counter(), time.process_time()
    model.encode_prompts(prompts, tokens, truncate=truncate).sum().backward()
    return time.perf_counter() - wall, time.process_time() - cpu


def time_cut_and_uncut(model: CLIPBackbone, tokens: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median wall and CPU seconds per mode; runs alternate so that load from other processes hits both alike."""
    embeddings = model.token_embedding(tokens).detach()
    runs: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for run in range(repeats + 1):
        for truncate in (True, False):
            seconds = forward_backward_seconds(model, embeddings, tokens, truncate)
            if run:  # the first round warms up allocators and kernels
                runs[truncate].append(seconds)
    median = {mode: [statistics.median(column) for column in zip(*times)] for mode, times in runs.items()}
    return {"cut_s": median[True][0], "uncut_s": median[False][0],
            "cut_cpu_s": median[True][1], "uncut_cpu_s": median[False][1]}


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = text_backbone_b16()
    tokens = random_prompts(args.n_prompts, args.eot_max, model.context_length,
                            torch.Generator().manual_seed(args.seed))
    with torch.no_grad():
        embeddings = model.token_embedding(tokens)
        max_abs_diff = (model.encode_prompts(embeddings, tokens, truncate=True)
                        - model.encode_prompts(embeddings, tokens, truncate=False)).abs().max().item()
    times = time_cut_and_uncut(model, tokens, args.repeats)
    print(json.dumps({
        "cut_s": round(times["cut_s"], 4), "uncut_s": round(times["uncut_s"], 4),
        "speedup": round(times["uncut_s"] / times["cut_s"], 2),
        "n_prompts": args.n_prompts, "eot_max": args.eot_max, "threads": args.threads, "repeats": args.repeats,
        # Process CPU time is less disturbed by other jobs on a shared machine than wall time.
        "cpu_speedup": round(times["uncut_cpu_s"] / times["cut_cpu_s"], 2), "max_abs_diff": max_abs_diff,
    }))


if __name__ == "__main__":
    main()
