"""dassl.data: DatasetWrapper, build_data_loader, samplers, transforms and DataManager."""
import logging

import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from dassl.config import get_cfg_default
from dassl.data import DataManager, DatasetWrapper, data_manager
from dassl.data.data_manager import BadImageError, bad_image_count, build_data_loader, reset_bad_image_count
from dassl.data.datasets import DATASET_REGISTRY, DatasetBase, Datum
from dassl.data.samplers import (
    GlobalBatchSampler,
    RandomClassSampler,
    RandomDomainSampler,
    ShardSampler,
    build_sampler,
)
from dassl.data.transforms import build_transform

SIZE = 8


def _write_images(folder, n, n_classes=2, size=(12, 10)):
    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    items = []
    for i in range(n):
        pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=gen, dtype=torch.uint8).numpy()
        path = folder / f"img_{i}.png"
        Image.fromarray(pixels).save(path)
        label = i % n_classes
        items.append(Datum(impath=str(path), label=label, domain=i % 2, classname=f"class{label}"))
    return items


@pytest.fixture
def cfg():
    cfg = get_cfg_default()
    cfg.INPUT.SIZE = (SIZE, SIZE)
    cfg.INPUT.TRANSFORMS = ("random_resized_crop", "random_flip", "normalize")
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.DATASET.NAME = "ToyData"
    cfg.VERBOSE = False
    return cfg


@pytest.fixture
def ten_items(tmp_path):
    return _write_images(tmp_path / "imgs", 10)


@pytest.mark.parametrize("seed", [-1, 1])
def test_drop_last_rule(cfg, ten_items, seed):
    cfg.SEED = seed
    tfm = build_transform(cfg, is_train=True)
    loader = build_data_loader(cfg, "RandomSampler", ten_items, batch_size=4, tfm=tfm, is_train=True)
    assert len(loader) == 2 and sum(len(b["index"]) for b in loader) == 8
    loader = build_data_loader(cfg, "RandomSampler", ten_items, batch_size=32, tfm=tfm, is_train=True)
    assert len(loader) == 1 and [len(b["index"]) for b in loader] == [10]
    test_loader = build_data_loader(cfg, "SequentialSampler", ten_items, batch_size=4, tfm=tfm, is_train=False)
    assert [len(b["index"]) for b in test_loader] == [4, 4, 2]


def test_batch_keys_and_types(cfg, ten_items):
    loader = build_data_loader(
        cfg, "SequentialSampler", ten_items, batch_size=4, tfm=build_transform(cfg, is_train=False), is_train=False
    )
    batch = next(iter(loader))
    assert set(batch) == {"img", "label", "domain", "impath", "index"}
    assert batch["img"].shape == (4, 3, SIZE, SIZE) and batch["img"].dtype == torch.float32
    assert batch["label"].tolist() == [0, 1, 0, 1] and batch["label"].dtype == torch.int64
    assert batch["index"].tolist() == [0, 1, 2, 3]
    assert batch["impath"] == [d.impath for d in ten_items[:4]]


def test_list_dict_and_k_transforms(cfg, ten_items):
    plain = build_transform(cfg, is_train=False)
    flip = v2.Compose([plain, v2.RandomHorizontalFlip(p=1.0)])
    listed = DatasetWrapper(cfg, ten_items, transform=[plain, flip])[3]
    assert torch.equal(listed["img2"], listed["img"].flip(-1)) and "img3" not in listed

    views = DatasetWrapper(cfg, ten_items, transform={"img": plain, "img_moco": flip})[3]
    assert set(views) == {"img", "img_moco", "label", "domain", "impath", "index"}
    assert torch.equal(views["img_moco"], views["img"].flip(-1))

    cfg.DATALOADER.K_TRANSFORMS = 2
    cfg.DATALOADER.RETURN_IMG0 = True
    item = DatasetWrapper(cfg, ten_items, transform=plain, is_train=True)[0]
    assert isinstance(item["img"], list) and len(item["img"]) == 2
    assert item["img0"].shape == (3, SIZE, SIZE)
    assert not isinstance(DatasetWrapper(cfg, ten_items, transform=plain, is_train=False)[0]["img"], list)


def test_global_batches_same_for_one_and_two_ranks():
    one = GlobalBatchSampler(10, 4, seed=3)
    ranks = [GlobalBatchSampler(10, 4, seed=3, rank=r, world_size=2) for r in range(2)]
    for epoch in range(2):
        for sampler in [one, *ranks]:
            sampler.set_epoch(epoch)
        single = list(one)
        split = [list(r) for r in ranks]
        assert len(single) == 3 and len(one) == 3 and len(ranks[0]) == 3
        assert [a + b for a, b in zip(*split)] == single
        assert all(len(a) == 2 for a in split[0][:2])
        if epoch == 0:
            first_epoch = single
    assert single != first_epoch  # a new permutation each epoch
    one.set_epoch(0)
    assert list(one) == first_epoch  # and the same one again for the same epoch (resume)
    assert list(one) == single  # without set_epoch the next iteration is the next epoch
    # A final partial batch smaller than the world size would leave a rank empty: dropped.
    assert len(GlobalBatchSampler(9, 4, seed=0, rank=1, world_size=2)) == 2


def test_shard_sampler_is_disjoint_and_complete():
    shards = [list(ShardSampler(7, r, 3)) for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(7)) and shards[0] == [0, 1, 2]


def test_empty_split_names_split_and_dataset(cfg):
    with pytest.raises(ValueError, match=r'test split of dataset "ToyData" is empty'):
        build_data_loader(cfg, "SequentialSampler", [], batch_size=4, is_train=False, split="test")


def test_bad_image_error_names_the_file(cfg, ten_items, tmp_path):
    broken = tmp_path / "imgs" / "img_4.png"
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 2])  # truncated
    wrapper = DatasetWrapper(cfg, ten_items, transform=build_transform(cfg, is_train=False))
    with pytest.raises(BadImageError, match="img_4.png"):
        wrapper[4]


def test_skip_bad_images_warns_once_and_counts(cfg, ten_items, tmp_path, caplog):
    (tmp_path / "imgs" / "img_2.png").write_bytes(b"not an image")
    cfg.DATALOADER.SKIP_BAD_IMAGES = True
    evaluation = DatasetWrapper(cfg, ten_items, transform=build_transform(cfg, is_train=False))
    with pytest.raises(BadImageError, match="img_2.png"):  # evaluation never substitutes: it would bias accuracy
        evaluation[2]
    wrapper = DatasetWrapper(cfg, ten_items, transform=build_transform(cfg, is_train=False), is_train=True)
    reset_bad_image_count()
    with caplog.at_level(logging.WARNING, logger="dassl"):
        first, second = wrapper[2], wrapper[2]
    assert first["index"] == 3 and first["label"] == ten_items[3].label  # the next readable sample
    assert second["index"] == 3
    assert sum("img_2.png" in r.getMessage() for r in caplog.records) == 1
    assert wrapper.num_skipped == 2 and bad_image_count() >= 2
    reset_bad_image_count()
    assert wrapper.num_skipped == 0

    # Counted in the main process even when a worker process reads the file.
    cfg.DATALOADER.NUM_WORKERS = 1
    loader = build_data_loader(
        cfg, "SequentialSampler", ten_items, batch_size=5, tfm=build_transform(cfg, is_train=False), is_train=True
    )
    indices = torch.cat([b["index"] for b in loader]).tolist()
    assert indices == [0, 1, 3, 3, 4, 5, 6, 7, 8, 9]
    assert loader.dataset.num_skipped == 1


def test_transform_pipelines_and_errors(cfg, caplog):
    cfg.INPUT.INTERPOLATION = "bicubic"
    with caplog.at_level(logging.INFO, logger="dassl"):
        train = build_transform(cfg, is_train=True)
    kinds = [type(t).__name__ for t in train.transforms]
    assert kinds == ["RandomResizedCrop", "RandomHorizontalFlip", "Compose", "Normalize", "ToPureTensor"]
    assert train.transforms[0].interpolation == v2.InterpolationMode.BICUBIC
    assert f"+ random resized crop (size=({SIZE}, {SIZE}), scale=(0.08, 1.0))" in caplog.messages

    test = build_transform(cfg, is_train=False)
    assert [type(t).__name__ for t in test.transforms] == ["Resize", "CenterCrop", "Compose", "Normalize", "ToPureTensor"]
    out = test(Image.new("RGB", (20, 10), color=(255, 0, 0)))
    assert type(out) is torch.Tensor and out.shape == (3, SIZE, SIZE)

    with pytest.raises(ValueError, match=r"random_rotate.*random_flip"):
        build_transform(cfg, choices=["random_rotate"])
    cfg.INPUT.INTERPOLATION = "lanczos"
    with pytest.raises(ValueError, match=r"lanczos.*bilinear"):
        build_transform(cfg)
    cfg.INPUT.NO_TRANSFORM = True
    assert build_transform(cfg) is None


def test_class_and_domain_samplers(ten_items):
    torch.manual_seed(0)
    sampler = RandomClassSampler(ten_items, batch_size=4, n_ins=2)
    order = list(sampler)
    for start in range(0, len(order), 4):
        labels = [ten_items[i].label for i in order[start : start + 4]]
        assert labels[0] == labels[1] and labels[2] == labels[3] and labels[0] != labels[2]
    with pytest.raises(ValueError):
        RandomClassSampler(ten_items, batch_size=1, n_ins=2)

    domain_order = list(RandomDomainSampler(ten_items, batch_size=4, n_domain=2))
    assert len(domain_order) == 8
    for start in range(0, 8, 4):
        assert sorted(ten_items[i].domain for i in domain_order[start : start + 4]) == [0, 0, 1, 1]
    with pytest.raises(ValueError, match=r"Unknown sampler type \"Balanced\".*RandomSampler"):
        build_sampler("Balanced", data_source=ten_items)


def test_data_manager_builds_loaders_and_logs_summary(cfg, tmp_path, caplog):
    items = _write_images(tmp_path / "dm", 6, n_classes=3)

    class ToyData(DatasetBase):
        def __init__(self, cfg):
            super().__init__(train_x=items, val=items[:3], test=items)

    DATASET_REGISTRY.register(ToyData, force=True)
    cfg.VERBOSE = True
    cfg.DATALOADER.TRAIN_X.BATCH_SIZE = 4
    cfg.DATALOADER.TEST.BATCH_SIZE = 4
    with caplog.at_level(logging.INFO, logger="dassl"):
        dm = DataManager(cfg)
    assert dm.num_classes == 3 and dm.lab2cname == {0: "class0", 1: "class1", 2: "class2"}
    assert len(dm.train_loader_x) == 1 and len(dm.val_loader) == 1 and len(dm.test_loader) == 2
    assert dm.train_loader_u is None
    summary = "\n".join(caplog.messages)
    assert "# train_x" in summary and "# val" in summary and "ToyData" in summary

    custom = DataManager(cfg, custom_tfm_train={"img": build_transform(cfg, is_train=False)})
    assert next(iter(custom.train_loader_x))["img"].shape == (4, 3, SIZE, SIZE)
    assert data_manager.bad_image_count() == 0
