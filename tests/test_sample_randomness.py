"""A training sample's random draws come from (SEED, epoch, index): the same on any number of processes or workers.

``python -m tests.test_sample_randomness ARGVS`` runs train.py's main once per argv list (a Python literal).
"""
from __future__ import annotations

import ast
import os
import random
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from dassl.config import get_cfg_default
from dassl.data import data_manager
from dassl.data.data_manager import build_data_loader
from dassl.data.datasets import Datum
from dassl.data.sample_rng import SampleKey, sample_rng
from dassl.data.samplers import SeededSampleBatches
from dassl.data.transforms import build_transform
from tests.test_trainers import training_methods

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_IMAGES, BATCH = 8, 4
# Every random step of the standard pipeline that runs on a PIL image or tensor, in one train transform.
RANDOM_TRANSFORMS = ("random_resized_crop", "random_flip", "colorjitter", "randomgrayscale", "gaussian_blur",
                     "randaugment", "cutout", "normalize", "gaussian_noise")


@pytest.fixture(scope="module")
def items(tmp_path_factory) -> list[Datum]:
    folder = tmp_path_factory.mktemp("imgs")
    gen = torch.Generator().manual_seed(0)
    out = []
    for i in range(N_IMAGES):
        pixels = torch.randint(0, 256, (20, 24, 3), generator=gen, dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"{i}.png")
        out.append(Datum(impath=str(folder / f"{i}.png"), label=i % 2, classname=f"c{i % 2}"))
    return out


def _cfg(seed: int = 3, workers: int = 0):
    import trainers  # noqa: F401  (registers INPUT.VIEWS)

    cfg = get_cfg_default()
    cfg.INPUT.SIZE = (16, 16)
    cfg.INPUT.TRANSFORMS = RANDOM_TRANSFORMS
    cfg.INPUT.GB_P = 0.5
    cfg.SEED = seed
    cfg.DATALOADER.NUM_WORKERS = workers
    return cfg


def _transforms(cfg) -> dict:
    from trainers.views import augmix_view, moco_view

    return {"img": build_transform(cfg, is_train=True), "img_moco": moco_view(cfg), "img_augmix": augmix_view(cfg)}


def _epoch_by_index(loader, epoch: int) -> dict[int, dict[str, torch.Tensor]]:
    """Every view of every sample the loader yields in ``epoch``, by sample index."""
    loader.batch_sampler.set_epoch(epoch)
    found = {}
    for batch in loader:
        for row, index in enumerate(batch["index"].tolist()):
            found[index] = {k: batch[k][row] for k in ("img", "img_moco", "img_augmix")}
    return found


def _loader(monkeypatch, items, cfg, rank: int = 0, world_size: int = 1):
    """The training loader ``rank`` of ``world_size`` processes builds (DDP faked: the rank and size it reads)."""
    monkeypatch.setattr(data_manager, "is_distributed", lambda: world_size > 1)
    monkeypatch.setattr(data_manager, "get_rank", lambda: rank)
    monkeypatch.setattr(data_manager, "get_world_size", lambda: world_size)
    return build_data_loader(cfg, "RandomSampler", items, batch_size=BATCH, tfm=_transforms(cfg), is_train=True)


def test_a_samples_views_are_the_same_on_any_number_of_processes_and_workers(monkeypatch, items):
    cfg = _cfg()
    reference = {epoch: _epoch_by_index(_loader(monkeypatch, items, cfg), epoch) for epoch in (0, 1)}
    assert sorted(reference[0]) == list(range(N_IMAGES))
    for world_size, workers in ((1, 2), (2, 0), (2, 2)):
        cfg = _cfg(workers=workers)
        loaders = [_loader(monkeypatch, items, cfg, rank, world_size) for rank in range(world_size)]
        for epoch in (0, 1):
            seen = {}
            for loader in loaders:
                seen.update(_epoch_by_index(loader, epoch))
            assert sorted(seen) == list(range(N_IMAGES))
            for index, views in seen.items():
                for key, view in views.items():
                    assert torch.equal(view, reference[epoch][index][key]), (world_size, workers, epoch, index, key)
    # The draws are real: samples, views and epochs differ from one another.
    first, second = reference[0], reference[1]
    for key in ("img", "img_moco", "img_augmix"):
        assert not torch.equal(first[0][key], first[1][key]), key
        assert not torch.equal(first[0][key], second[0][key]), key


def test_seeded_draws_ignore_the_global_generators_and_leave_them_alone(monkeypatch, items):
    loader = _loader(monkeypatch, items, _cfg())
    assert isinstance(loader.batch_sampler, SeededSampleBatches)
    torch.manual_seed(0)
    first = _epoch_by_index(loader, 0)
    torch.manual_seed(1)
    again = _epoch_by_index(loader, 0)  # the same epoch again (a resume): the same draws
    assert all(torch.equal(first[i]["img"], again[i]["img"]) for i in first)
    assert not torch.equal(first[0]["img"], _epoch_by_index(_loader(monkeypatch, items, _cfg(seed=4)), 0)[0]["img"])

    key = SampleKey(seed=3, epoch=0, index=5)
    torch.manual_seed(7), random.seed(7), np.random.seed(7)
    with sample_rng(key):
        inside = (torch.rand(3), random.random(), np.random.rand())
    after = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(7), random.seed(7), np.random.seed(7)
    untouched = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(after[0], untouched[0]) and after[1:] == untouched[1:]  # the caller's streams go on as if
    with sample_rng(key):
        assert torch.equal(torch.rand(3), inside[0]) and random.random() == inside[1] and np.random.rand() == inside[2]
    for other in (key._replace(seed=4), key._replace(epoch=1), key._replace(index=6), key._replace(stream=1)):
        with sample_rng(other):
            assert not torch.equal(torch.rand(3), inside[0]), other


def test_without_a_seed_the_draws_are_fresh_from_the_global_generator(monkeypatch, items):
    loader = _loader(monkeypatch, items, _cfg(seed=-1))
    assert not isinstance(loader.batch_sampler, SeededSampleBatches)

    def draws(seed):
        torch.manual_seed(seed)
        return torch.cat([b["img"] for b in loader])

    assert torch.equal(draws(0), draws(0)) and not torch.equal(draws(0), draws(1))


def test_a_seeded_sequential_loader_keys_its_samples_too(items):
    cfg = _cfg()
    loader = build_data_loader(cfg, "SequentialSampler", items, batch_size=BATCH, tfm=_transforms(cfg), is_train=True)
    batches = list(loader.batch_sampler)
    assert batches[0] == [SampleKey(3, 0, i) for i in range(BATCH)]
    assert [len(b) for b in batches] == [BATCH, BATCH] and len(loader) == 2
    assert list(loader.batch_sampler)[0][0] == SampleKey(3, 1, 0)  # without set_epoch: the next epoch
    loader.batch_sampler.load_state_dict({"epoch": 0})
    assert list(loader.batch_sampler)[0][0] == SampleKey(3, 0, 0)
    unlabelled = build_data_loader(cfg, "SequentialSampler", items, batch_size=BATCH, tfm=_transforms(cfg),
                                   is_train=True, split="train_u")
    assert list(unlabelled.batch_sampler)[0][0] == SampleKey(3, 0, 0, stream=1)  # apart from the labelled sample 0
    evaluation = build_data_loader(cfg, "SequentialSampler", items, batch_size=BATCH, tfm=_transforms(cfg),
                                   is_train=False)
    assert not isinstance(evaluation.batch_sampler, SeededSampleBatches)  # evaluation draws nothing


# ---- end to end: 1 and 2 processes, 0 and 2 DataLoader workers ------------------------------------------------

EPOCHS = 2


def _run_argvs(argvs: list[list[str]], processes: int = 1) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    return subprocess.run([*launcher, "-m", "tests.test_sample_randomness", repr(argvs)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _accuracy(output_dir: str) -> str:
    with open(os.path.join(output_dir, "log.txt")) as f:
        found = re.findall(r"\* accuracy: ([\d.]+)%", f.read())
    assert found, f"no accuracy line in {output_dir}/log.txt"
    return found[-1]


@pytest.fixture(scope="module")
def caltech_root(tmp_path_factory) -> str:
    from tests.fake_trees import make_fake_trees

    root = tmp_path_factory.mktemp("data")
    make_fake_trees(str(root), ["Caltech101"])
    return str(root)


@pytest.mark.parametrize("trainer", training_methods())
def test_one_and_two_processes_and_any_workers_learn_the_same_weights(trainer, tiny_clip_path, caltech_root, tmp_path):
    """Random resized crops and flips (and GOPro's MoCo-v3 and AugMix views) on, 2 epochs, gloo."""
    def argv(name: str, workers: int) -> list[str]:
        return [
            "--root", caltech_root, "--trainer", trainer, "--seed", "1", "--output-dir", str(tmp_path / name),
            "--dataset-config-file", os.path.join(REPO, "configs", "datasets", "caltech101.yaml"),
            "--config-file", os.path.join(REPO, "configs", "trainers", trainer, "tiny.yaml"),
            "MODEL.BACKBONE.NAME", tiny_clip_path, "DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", str(EPOCHS),
            "DATALOADER.NUM_WORKERS", str(workers),
        ]

    runs = {"p1w0": (1, 0), "p1w2": (1, 2), "p2w2": (2, 2)}
    single = _run_argvs([argv("p1w0", 0), argv("p1w2", 2)])
    assert single.returncode == 0, (single.stdout + single.stderr)[-4000:]
    two = _run_argvs([argv("p2w2", 2)], processes=2)
    assert two.returncode == 0, (two.stdout + two.stderr)[-4000:]

    from dassl.utils import load_checkpoint

    weights = {name: load_checkpoint(str(tmp_path / name / "prompt_learner" / f"model.pth.tar-{EPOCHS}"))["state_dict"]
               for name in runs}
    reference = weights["p1w0"]
    for name in ("p1w2", "p2w2"):
        assert reference.keys() == weights[name].keys()
        for key, value in reference.items():
            torch.testing.assert_close(weights[name][key], value, rtol=0, atol=1e-6, msg=f"{name} {key}")
        assert _accuracy(str(tmp_path / name)) == _accuracy(str(tmp_path / "p1w0")), name


def main(argvs: list[list[str]]) -> None:
    import train

    for argv in argvs:
        train.main(argv)


if __name__ == "__main__":
    main(ast.literal_eval(sys.argv[1]))
