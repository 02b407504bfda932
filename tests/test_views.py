"""GOPro's MoCo-v3 and AugMix views: the public code's distributions, config-driven, reproducible by seed."""
import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset

import trainers  # noqa: F401  (registers INPUT.VIEWS)
from dassl.config import get_cfg_default
from dassl.config.defaults import default_num_workers
from trainers.augmix import AUGMIX_OPS, AugMix, apply_op, sample_magnitude, sample_mixing
from trainers.views import PILGaussianBlur, augmix_view, build_view_transforms, moco_view

DRAWS = 2000


def _cfg(size: int = 32):
    cfg = get_cfg_default()
    cfg.INPUT.SIZE = (size, size)
    cfg.INPUT.TRANSFORMS = ("random_resized_crop", "random_flip", "normalize")
    cfg.INPUT.PIXEL_MEAN = [0.48145466, 0.4578275, 0.40821073]
    cfg.INPUT.PIXEL_STD = [0.26862954, 0.26130258, 0.27577711]
    return cfg


def _photo(width: int = 48, height: int = 40, seed: int = 0) -> Image.Image:
    pixels = torch.randint(0, 256, (height, width, 3), generator=torch.Generator().manual_seed(seed))
    return Image.fromarray(pixels.to(torch.uint8).numpy())


def _draws(name: str, severity: int, size: int = 224) -> list:
    torch.manual_seed(0)
    return [sample_magnitude(name, severity, size, size) for _ in range(DRAWS)]


# ---- op parameters: the public code's ranges, continuous levels in [0.1, severity] --------------------------

# The public ranges at 224 x 224: severity 1 rotates 0-2 degrees, shears 0.003-0.03, translates 0-7 px,
# solarizes at 231-254 and keeps 4 bits; severity 3 reaches 8 degrees, 0.09, 22 px, threshold 180, 3 bits.
PUBLIC_RANGES = {
    1: {"rotate": set(range(-2, 3)), "translate_x": set(range(-7, 8)), "translate_y": set(range(-7, 8)),
        "solarize": set(range(231, 255)), "posterize": {4}, "shear": (0.003, 0.03)},
    3: {"rotate": set(range(-8, 9)), "translate_x": set(range(-22, 23)), "translate_y": set(range(-22, 23)),
        "solarize": set(range(180, 255)), "posterize": {3, 4}, "shear": (0.003, 0.09)},
}


@pytest.mark.parametrize("severity", [1, 3])
def test_op_parameters_cover_the_public_range_and_nothing_outside(severity):
    expected = PUBLIC_RANGES[severity]
    for name in ("rotate", "translate_x", "translate_y", "solarize", "posterize"):
        assert set(_draws(name, severity)) == expected[name], name  # every value of the range, and only those
    low, high = expected["shear"]
    for name in ("shear_x", "shear_y"):
        shears = torch.tensor(_draws(name, severity))
        size = shears.abs()
        assert size.min() >= low - 1e-12 and size.max() < high, name
        assert size.min() < low + 0.02 * (high - low) and size.max() > high - 0.02 * (high - low), name
        assert 0.45 < (shears > 0).float().mean() < 0.55, name  # random sign
    assert _draws("autocontrast", severity)[:3] == [None] * 3 and _draws("equalize", severity)[:3] == [None] * 3


def test_levels_are_continuous_so_the_rotation_histogram_follows_them():
    # level ~ U[0.1, 1]; degrees = int(3 * level): |0| for level < 1/3, 1 below 2/3, else 2 (torchvision: always 0).
    counts = torch.tensor(_draws("rotate", 1)).abs().bincount(minlength=3).float() / DRAWS
    assert torch.allclose(counts, torch.tensor([7 / 27, 10 / 27, 10 / 27]), atol=0.04)


def test_translation_scales_with_the_image_side():
    assert {abs(v) for v in _draws("translate_x", 1, size=32)} == {0, 1}  # int(level * 32/3 / 10): 1 above 0.9375
    torch.manual_seed(0)
    widths = {abs(sample_magnitude("translate_x", 1, 32, 448)) for _ in range(DRAWS)}
    heights = {abs(sample_magnitude("translate_y", 1, 32, 448)) for _ in range(DRAWS)}
    assert widths == set(range(1, 15)) and heights == {0, 1}  # 448/3 px at level 0.1 is already 1 px


# ---- the ops apply those parameters as the public code's PIL ops do -----------------------------------------

def _bar() -> Image.Image:
    pixels = np.zeros((64, 64), np.uint8)
    pixels[31:34, 8:56] = 255
    return Image.fromarray(np.stack([pixels] * 3, -1))


def _bar_angle(image: Image.Image) -> float:
    """Counter-clockwise angle of the bright bar's principal axis, in degrees (image rows point down)."""
    g = np.asarray(image)[..., 0].astype(float)
    y, x = np.indices(g.shape)
    w = g / g.sum()
    x, y = x - (w * x).sum(), y - (w * y).sum()
    return -math.degrees(0.5 * math.atan2(2 * (w * x * y).sum(), (w * x * x).sum() - (w * y * y).sum()))


def test_rotation_angle_recovered_from_the_pattern_is_the_sampled_one():
    torch.manual_seed(1)
    recovered = []
    for _ in range(40):
        degrees = sample_magnitude("rotate", 3, 64, 64)
        angle = _bar_angle(apply_op(_bar(), "rotate", degrees))
        assert abs(angle - degrees) < 0.1, (degrees, angle)
        recovered.append(angle)
    assert max(recovered) > 4 and min(recovered) < -4 and max(map(abs, recovered)) < 8.1


def test_each_op_is_the_public_pil_operation():
    image, bilinear = _photo(40, 32), Image.Resampling.BILINEAR
    size = image.size
    public = {
        ("rotate", -2): image.rotate(-2, resample=bilinear),
        ("shear_x", 0.02): image.transform(size, Image.Transform.AFFINE, (1, 0.02, 0, 0, 1, 0), resample=bilinear),
        ("shear_y", -0.03): image.transform(size, Image.Transform.AFFINE, (1, 0, 0, -0.03, 1, 0), resample=bilinear),
        ("translate_x", 5): image.transform(size, Image.Transform.AFFINE, (1, 0, 5, 0, 1, 0), resample=bilinear),
        ("translate_y", -3): image.transform(size, Image.Transform.AFFINE, (1, 0, 0, 0, 1, -3), resample=bilinear),
        ("solarize", 240): ImageOps.solarize(image, 240),
        ("posterize", 3): ImageOps.posterize(image, 3),
        ("autocontrast", None): ImageOps.autocontrast(image),
        ("equalize", None): ImageOps.equalize(image),
    }
    assert {name for name, _ in public} == set(AUGMIX_OPS)
    for (name, magnitude), expected in public.items():
        assert np.array_equal(np.asarray(apply_op(image, name, magnitude)), np.asarray(expected)), name


def test_severity_one_geometric_and_solarize_ops_change_the_image():
    # torchvision's AugMix(severity=1) with these ops changed images by at most 1 grey level.
    mixer = AugMix(severity=1, ops=("rotate", "shear_x", "shear_y", "translate_x", "translate_y", "solarize"))
    image = _photo(96, 96)
    torch.manual_seed(0)
    original = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255
    changes = [(mixer(image) - original).abs().max().item() for _ in range(10)]
    assert max(changes) > 0.2


# ---- chains and mixing -------------------------------------------------------------------------------------

def test_chain_depth_is_uniform_in_range_and_ops_uniform():
    mixer = AugMix()
    torch.manual_seed(0)
    chains = [mixer.sample_chain(224, 224) for _ in range(DRAWS)]
    depths = torch.tensor([len(c) for c in chains]).bincount(minlength=5)[1:].float() / DRAWS
    assert depths[3] == 0 and torch.allclose(depths[:3], torch.full((3,), 1 / 3), atol=0.04)
    names = [name for chain in chains for name, _ in chain]
    freq = torch.tensor([names.count(op) for op in AUGMIX_OPS]).float() / len(names)
    assert torch.allclose(freq, torch.full((len(AUGMIX_OPS),), 1 / len(AUGMIX_OPS)), atol=0.025)
    fixed = AugMix(depth=(2, 2))
    assert {len(fixed.sample_chain(8, 8)) for _ in range(50)} == {2}


def test_mixing_weights_are_dirichlet_and_the_share_is_uniform():
    torch.manual_seed(0)
    draws = [sample_mixing(3, 1.0) for _ in range(DRAWS)]
    weights = torch.stack([w for w, _ in draws])
    shares = torch.tensor([m for _, m in draws])
    assert torch.allclose(weights.sum(1), torch.ones(DRAWS)) and weights.min() >= 0
    # Dirichlet(1,1,1): each weight ~ Beta(1, 2), mean 1/3, P(w < 1/2) = 3/4. Beta(1,1): uniform on [0, 1].
    assert torch.allclose(weights.mean(0), torch.full((3,), 1 / 3), atol=0.02)
    assert torch.allclose((weights < 0.5).float().mean(0), torch.full((3,), 0.75), atol=0.03)
    assert shares.min() >= 0 and shares.max() <= 1
    assert torch.allclose(torch.quantile(shares, torch.tensor([0.25, 0.5, 0.75])), torch.tensor([0.25, 0.5, 0.75]),
                          atol=0.03)


def test_the_view_is_inside_the_convex_hull_of_image_and_chains(monkeypatch):
    chains = []
    original_apply = AugMix.apply_chain

    def recording_apply(self, image, chain):
        out = original_apply(self, image, chain)
        chains.append(torch.from_numpy(np.array(out)).permute(2, 0, 1).float() / 255)
        return out

    monkeypatch.setattr(AugMix, "apply_chain", recording_apply)
    image = _photo(32, 32)
    original = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255
    torch.manual_seed(3)
    for _ in range(5):
        chains.clear()
        out = AugMix()(image)
        corners = torch.stack([original, *chains])
        assert len(chains) == 3
        assert (out >= corners.min(0).values - 1e-6).all() and (out <= corners.max(0).values + 1e-6).all()
    for _ in range(5):  # with ops that always change this image, the view is a mixture, not one of the corners
        chains.clear()
        out = AugMix(ops=("solarize", "posterize"))(image)
        assert all((out - c).abs().max() > 1e-3 for c in [original, *chains])


# ---- the MoCo-v3 view ---------------------------------------------------------------------------------------

def test_pil_blur_has_the_sampled_standard_deviation():
    blur = PILGaussianBlur((0.1, 2.0))
    torch.manual_seed(0)
    sigmas = torch.tensor([blur.sample_sigma() for _ in range(DRAWS)])
    assert sigmas.min() >= 0.1 and sigmas.max() <= 2.0 and sigmas.min() < 0.12 and sigmas.max() > 1.98
    impulse = np.zeros((41, 41), np.uint8)
    impulse[20, 20] = 255
    for sigma in (1.0, 2.0):
        blur.sigma = (sigma, sigma)
        spread = np.asarray(blur(Image.fromarray(impulse))).astype(float)
        x = np.arange(41) - 20
        std = math.sqrt((spread.sum(0) * x**2).sum() / spread.sum())
        assert abs(std - sigma) < 0.15 * sigma, (sigma, std)


def test_moco_view_is_built_from_the_config():
    cfg = _cfg(224)
    steps = moco_view(cfg).transforms
    crop, jitter, gray, blur, flip = steps[:5]
    assert crop.scale == (0.08, 1.0) and crop.interpolation == crop.interpolation.BILINEAR
    color = jitter.transforms[0]
    assert jitter.p == 0.8 and color.brightness == (0.6, 1.4) and color.contrast == (0.6, 1.4)
    assert color.saturation == (0.8, 1.2) and color.hue == (-0.1, 0.1)
    assert gray.p == 0.2 and blur.p == 1.0 and blur.transforms[0].sigma == (0.1, 2.0) and flip.p == 0.5

    cfg.INPUT.VIEWS.MOCO.COLORJITTER_P = 0.0
    cfg.INPUT.VIEWS.MOCO.GRAYSCALE_P = 1.0
    cfg.INPUT.VIEWS.MOCO.BLUR_SIGMA = (0.3, 0.5)
    cfg.INPUT.VIEWS.MOCO.INTERPOLATION = "bicubic"
    view = moco_view(cfg)
    assert view.transforms[3].transforms[0].sigma == (0.3, 0.5)
    assert view.transforms[0].interpolation == view.transforms[0].interpolation.BICUBIC
    torch.manual_seed(0)
    pixels = view(_photo()) * torch.tensor(cfg.INPUT.PIXEL_STD)[:, None, None]
    pixels = pixels + torch.tensor(cfg.INPUT.PIXEL_MEAN)[:, None, None]
    assert torch.allclose(pixels[0], pixels[1], atol=1e-5) and torch.allclose(pixels[1], pixels[2], atol=1e-5)


def test_augmix_view_is_built_from_the_config():
    cfg = _cfg(224)
    crop, flip, mixer, _ = augmix_view(cfg).transforms
    assert crop.scale == (0.08, 1.0) and crop.interpolation == crop.interpolation.BILINEAR and flip.p == 0.5
    assert (mixer.severity, mixer.width, mixer.depth, mixer.alpha, mixer.ops) == (1, 3, (1, 3), 1.0, AUGMIX_OPS)
    node = cfg.INPUT.VIEWS.AUGMIX
    node.SEVERITY, node.WIDTH, node.DEPTH, node.OPS = 3, 2, (2, 2), ("rotate",)
    mixer = augmix_view(cfg).transforms[2]
    assert (mixer.severity, mixer.width, mixer.depth, mixer.ops) == (3, 2, (2, 2), ("rotate",))


@pytest.mark.parametrize("key, value, match", [
    ("AUGMIX.SEVERITY", 0, "INPUT.VIEWS.AUGMIX.SEVERITY is 0; valid: an integer from 1 to 10"),
    ("AUGMIX.SEVERITY", 11, "AUGMIX.SEVERITY is 11"),
    ("AUGMIX.OPS", ("rotate", "blur"), "AUGMIX.OPS .* valid: a subset of autocontrast"),
    ("AUGMIX.DEPTH", (3, 1), "AUGMIX.DEPTH"),
    ("MOCO.BLUR_SIGMA", (0.0, 2.0), "MOCO.BLUR_SIGMA"),
    ("MOCO.GRAYSCALE_P", 1.5, "MOCO.GRAYSCALE_P is 1.5; valid: a probability"),
    ("MOCO.INTERPOLATION", "lanczos", "MOCO.INTERPOLATION is 'lanczos'; valid: bilinear"),
])
def test_a_bad_view_setting_names_its_key(key, value, match):
    cfg = _cfg()
    view, name = key.split(".")
    cfg.INPUT.VIEWS[view][name] = value
    with pytest.raises(ValueError, match=match):
        build_view_transforms(cfg)


# ---- reproducibility ----------------------------------------------------------------------------------------

def test_views_are_normalised_pixels_fixed_by_the_seed():
    views = build_view_transforms(_cfg())
    image = _photo()

    def draw(seed):
        torch.manual_seed(seed)
        return {k: t(image) for k, t in views.items()}

    first, again, other = draw(0), draw(0), draw(1)
    mean = torch.tensor(_cfg().INPUT.PIXEL_MEAN)[:, None, None]
    std = torch.tensor(_cfg().INPUT.PIXEL_STD)[:, None, None]
    for key in views:
        assert type(first[key]) is torch.Tensor and first[key].shape == (3, 32, 32), key
        pixels = first[key] * std + mean
        assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5, key  # de-normalises to valid pixels
        assert torch.equal(first[key], again[key]), key
        assert not torch.equal(first[key], other[key]), key


class _SameImage(Dataset):
    def __init__(self, views):
        self.views, self.image = views, _photo()

    def __len__(self):
        return 8

    def __getitem__(self, idx):
        return {key: tfm(self.image) for key, tfm in self.views.items()}


def test_dataloader_workers_give_the_same_views_for_the_same_seed():
    dataset = _SameImage(build_view_transforms(_cfg(), ("img_moco", "img_augmix")))

    def epoch(seed):
        torch.manual_seed(seed)
        batches = list(DataLoader(dataset, batch_size=4, num_workers=2))
        return {key: torch.cat([b[key] for b in batches]) for key in batches[0]}

    first, again, other = epoch(0), epoch(0), epoch(1)
    for key, views in first.items():
        assert torch.equal(views, again[key]), key
        assert not torch.equal(views, other[key]), key
        assert not torch.equal(views[0], views[4]), key  # batch 0 and 1 came from different workers
        assert not torch.equal(views[0], views[1]), key  # and every draw in one worker is new


# ---- data loader workers ------------------------------------------------------------------------------------

@pytest.mark.parametrize("cores, workers", [(1, 0), (2, 0), (3, 0), (4, 2), (16, 8), (64, 8)])
def test_default_workers_are_half_the_usable_cores_and_none_below_four(monkeypatch, cores, workers):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert default_num_workers() == workers
