"""Tests of the batched BYOL augmentations (byol.augment, byol.color)."""

from __future__ import annotations

import colorsys
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from byol.augment import (
    JITTER_OPS,
    PRESETS,
    BYOLAugment,
    ViewConfig,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    blur_kernel_size,
    gaussian_blur,
    gaussian_kernel1d,
    hsv_to_rgb,
    rgb_to_hsv,
    solarize,
    to_grayscale,
)
from byol.errors import ConfigError, DataError

# A view with every photometric op off: crop, flip and normalisation only.
GEOMETRY_ONLY = ViewConfig(jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0, solarize_prob=0.0)


@pytest.fixture(autouse=True)
def one_thread():
    # The ops here are small and many: on a shared 2-core machine, intra-op threads mostly wait
    # on each other. Restored afterwards so other test modules keep the default.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def replace_geometry(**changes) -> ViewConfig:
    return replace(GEOMETRY_ONLY, **changes)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def uint8_images(*shape: int, seed: int = 100) -> torch.Tensor:
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=gen(seed))


def unnormalise(view: torch.Tensor, mean, std) -> torch.Tensor:
    mean_t = torch.tensor(mean).view(1, -1, 1, 1)
    std_t = torch.tensor(std).view(1, -1, 1, 1)
    return view.float() * std_t + mean_t


# ----------------------------------------------------------------------------- per-sample draws


def test_samples_of_a_batch_draw_their_own_parameters():
    image = uint8_images(1, 3, 16, 16)
    batch = image.expand(64, -1, -1, -1).contiguous()
    aug = BYOLAugment("imagenet", 16)
    view1, view2, p1, p2 = aug(batch, generator=gen(0), return_params=True)
    for view in (view1, view2):
        flat = view.flatten(1)
        distinct = torch.cdist(flat, flat) + torch.eye(64) * 1e9
        assert distinct.min().item() > 1e-3  # no two samples came out alike
    for params in (p1, p2):
        assert params["crop"].std(dim=0).min().item() > 0.5  # every coordinate varies
        assert 0 < params["flip"].sum().item() < 64
        assert torch.unique(params["jitter_factors"], dim=0).shape[0] == 64
        assert torch.unique(params["jitter_order"], dim=0).shape[0] > 10
    sigmas = p1["blur_sigma"]  # imagenet view 1 always blurs
    assert (sigmas > 0).all() and torch.unique(sigmas).numel() == 64
    assert sigmas.min().item() >= 0.1 and sigmas.max().item() <= 2.0


@pytest.mark.parametrize("preset", ["imagenet", "cifar"])
def test_per_view_probabilities_within_4_sigma(preset):
    n = 4096
    batch = uint8_images(n, 3, 8, 8)
    aug = BYOLAugment(preset, 8)
    *_, p1, p2 = aug(batch, generator=gen(1), return_params=True)
    for config, params in zip(PRESETS[preset], (p1, p2), strict=True):
        observed = {
            "flip_prob": params["flip"],
            "jitter_prob": params["jitter"],
            "grayscale_prob": params["grayscale"],
            "blur_prob": params["blur_sigma"] > 0,
            "solarize_prob": params["solarize"],
        }
        for name, flags in observed.items():
            p = getattr(config, name)
            rate = flags.float().mean().item()
            band = 4 * math.sqrt(p * (1 - p) / n)
            assert abs(rate - p) <= band, f"{preset} {name}: rate {rate:.4f} vs p {p} ± {band:.4f}"
    assert PRESETS[preset][0].solarize_prob == 0.0 and PRESETS[preset][1].solarize_prob == 0.2
    blur = (1.0, 0.1) if preset == "imagenet" else (0.0, 0.0)
    assert (PRESETS[preset][0].blur_prob, PRESETS[preset][1].blur_prob) == blur


# ----------------------------------------------------------------------------- crop law


def ks_statistic(samples: np.ndarray, cdf) -> float:
    """Kolmogorov-Smirnov distance between the samples' empirical CDF and ``cdf``."""
    x = np.sort(samples)
    n = x.size
    f = cdf(x)
    return float(max((np.arange(1, n + 1) / n - f).max(), (f - np.arange(n) / n).max()))


def crop_draws(config: ViewConfig, n: int, h: int = 256, w: int = 256, seed: int = 2):
    # The pixels do not matter for the boxes: a broadcast image keeps the test light.
    batch = torch.rand(1, 1, h, w).expand(n, -1, -1, -1)
    aug = BYOLAugment((config, config), 4)
    _, params = aug.view(batch, config, generator=gen(seed), return_params=True)
    box = params["crop"].double().numpy()
    bw, bh = box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]
    return box, bw * bh / (h * w), np.log(bw / bh)


KS_CRITICAL = 1.95  # alpha = 0.001, times 1 / sqrt(n)


def test_crop_area_and_log_ratio_follow_uniform_laws_when_every_box_fits():
    # scale <= 0.75 and ratio <= 4/3 give s * r <= 1: no draw is ever rejected.
    config = replace_geometry(crop_scale=(0.08, 0.75), crop_law="torchvision")
    n = 16384
    box, area, log_ratio = crop_draws(config, n)
    bound = math.log(4 / 3)
    assert ks_statistic(area, lambda v: (v - 0.08) / 0.67) < KS_CRITICAL / math.sqrt(n)
    ks = ks_statistic(log_ratio, lambda t: (t + bound) / (2 * bound))
    assert ks < KS_CRITICAL / math.sqrt(n)
    # Top-left corner uniform over the positions that keep the box inside.
    bw = box[:, 2] - box[:, 0]
    assert ks_statistic(box[:, 0] / (256 - bw), lambda u: u) < KS_CRITICAL / math.sqrt(n)
    assert box.min() >= 0 and box[:, 2].max() <= 256 and box[:, 3].max() <= 256


def test_crop_law_is_the_uniform_law_restricted_to_boxes_that_fit():
    # Default (0.08, 1) x (3/4, 4/3) on a square image: a draw fits iff s <= exp(-|log r|);
    # 10 tries leave ~1e-8 of the samples to the fallback, so the kept draws follow the
    # uniform density restricted to that region.
    n = 16384
    _, area, log_ratio = crop_draws(ViewConfig(crop_law="torchvision"), n)
    a, bound = 0.08, math.log(4 / 3)
    norm = 2 * (1 - math.exp(-bound)) - 2 * a * bound

    def log_ratio_cdf(t):
        t = np.asarray(t)
        left = lambda u: np.exp(u) - math.exp(-bound) - a * (u + bound)  # noqa: E731
        return np.where(t <= 0, left(np.minimum(t, 0)), norm - left(-np.maximum(t, 0))) / norm

    grid = np.linspace(a, 1.0, 200001)
    density = 2 * np.minimum(bound, -np.log(grid))
    cumulative = np.concatenate([[0], np.cumsum((density[1:] + density[:-1]) / 2 * np.diff(grid))])
    cumulative /= cumulative[-1]
    assert ks_statistic(area, lambda v: np.interp(v, grid, cumulative)) < KS_CRITICAL / math.sqrt(n)
    assert ks_statistic(log_ratio, log_ratio_cdf) < KS_CRITICAL / math.sqrt(n)
    assert area.max() <= 1.0 + 1e-9 and area.min() >= a - 1e-9


def reference_law_boxes(n: int, h: int, w: int, seed: int) -> np.ndarray:
    """The official code's _decode_and_random_crop, written out in numpy: one draw of area and
    log-ratio, width and height rounded and clamped, integer offsets uniform."""
    rng = np.random.default_rng(seed)
    target = rng.uniform(0.08, 1.0, n) * h * w
    ratio = np.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3), n))
    bw = np.minimum(np.round(np.sqrt(target * ratio)), w)
    bh = np.minimum(np.round(np.sqrt(target / ratio)), h)
    x0 = np.floor(rng.uniform(0, 1, n) * (w - bw + 1))
    y0 = np.floor(rng.uniform(0, 1, n) * (h - bh + 1))
    return np.stack([x0, y0, x0 + bw, y0 + bh], axis=1)


def two_sample_ks(a: np.ndarray, b: np.ndarray) -> float:
    values = np.sort(np.concatenate([a, b]))
    cdf_a = np.searchsorted(np.sort(a), values, side="right") / len(a)
    cdf_b = np.searchsorted(np.sort(b), values, side="right") / len(b)
    return float(np.abs(cdf_a - cdf_b).max())


@pytest.mark.parametrize("h, w", [(256, 256), (300, 451), (640, 427)])
def test_reference_crop_law_matches_the_official_code(h, w):
    # The default law: area, aspect ratio and corner as the reference draws them, on square,
    # wide (chelsea's 451 x 300) and tall (rocket's 427 x 640) images, against an independent
    # numpy version of the official code (two-sample KS at alpha = 0.001).
    n = 8192
    box, area, log_ratio = crop_draws(replace_geometry(), n, h=h, w=w)
    expected = reference_law_boxes(n, h, w, seed=7)
    e_w, e_h = expected[:, 2] - expected[:, 0], expected[:, 3] - expected[:, 1]
    critical = KS_CRITICAL * math.sqrt(2 / n)
    assert two_sample_ks(area, e_w * e_h / (h * w)) < critical
    assert two_sample_ks(log_ratio, np.log(e_w / e_h)) < critical
    assert two_sample_ks(box[:, 0] / w, expected[:, 0] / w) < critical
    # Whole pixels, inside the image; one draw, clamped, so a box may touch both sides.
    np.testing.assert_array_equal(box, np.round(box))
    assert box[:, :2].min() >= 0 and box[:, 2].max() <= w and box[:, 3].max() <= h
    assert ((box[:, 2] - box[:, 0]) == w).any() or ((box[:, 3] - box[:, 1]) == h).any()


def test_crop_falls_back_to_central_clamped_crop_when_nothing_fits():
    # The whole area at aspect <= 4/3 never fits a 16 x 64 image: every sample falls back to
    # the full height with the ratio clamped to 4/3, centred.
    config = replace_geometry(crop_scale=(1.0, 1.0), crop_law="torchvision")
    box, _, _ = crop_draws(config, 32, h=16, w=64)
    width = 16 * 4 / 3
    expected = [(64 - width) / 2, 0.0, (64 + width) / 2, 16.0]
    np.testing.assert_allclose(box, np.tile(expected, (32, 1)), atol=1e-4)


def test_crop_boxes_and_flips_describe_the_output():
    # Channel 0 is a horizontal ramp, channel 1 a vertical one. Bilinear sampling reproduces a
    # linear function exactly, so every output pixel must equal the ramp at the position the
    # reported box (and flip) map it to; border padding clamps outside pixel centres.
    h, w, out = 24, 40, 12
    ys, xs = torch.meshgrid(torch.arange(h).double(), torch.arange(w).double(), indexing="ij")
    image = torch.stack([xs / w, ys / h, torch.full_like(xs, 0.5)]).unsqueeze(0).float()
    batch = image.expand(256, -1, -1, -1)
    aug = BYOLAugment((GEOMETRY_ONLY, GEOMETRY_ONLY), out, mean=(0, 0, 0), std=(1, 1, 1))
    view, params = aug.view(batch, GEOMETRY_ONLY, generator=gen(3), return_params=True)
    box = params["crop"].double()
    steps = (torch.arange(out).double() + 0.5) / out
    u = box[:, 0:1] + steps * (box[:, 2:3] - box[:, 0:1])  # continuous x of each output column
    u_flipped = box[:, 2:3] - steps * (box[:, 2:3] - box[:, 0:1])
    u = torch.where(params["flip"][:, None], u_flipped, u)
    v = box[:, 1:2] + steps * (box[:, 3:4] - box[:, 1:2])
    expected_x = (u - 0.5).clamp(0, w - 1) / w
    expected_y = (v - 0.5).clamp(0, h - 1) / h
    torch.testing.assert_close(
        view[:, 0].double(), expected_x[:, None, :].expand(-1, out, -1), atol=2e-5, rtol=0
    )
    torch.testing.assert_close(
        view[:, 1].double(), expected_y[:, :, None].expand(-1, -1, out), atol=2e-5, rtol=0
    )
    assert params["flip"].any() and not params["flip"].all()


# ----------------------------------------------------------------------------- colour ops


def rand_images(n=4, h=5, w=6, seed=0) -> torch.Tensor:
    return torch.rand(n, 3, h, w, generator=gen(seed), dtype=torch.float64)


def colorsys_map(x: torch.Tensor, fn) -> torch.Tensor:
    """Apply a colorsys pixel function to every pixel of an (N, 3, H, W) float64 batch."""
    pixels = x.permute(0, 2, 3, 1).reshape(-1, 3).tolist()
    out = torch.tensor([fn(*p) for p in pixels], dtype=torch.float64)
    return out.view(x.shape[0], x.shape[2], x.shape[3], 3).permute(0, 3, 1, 2)


def test_brightness_and_contrast_match_formulas_per_sample():
    x = rand_images()
    shift = torch.tensor([-0.4, -0.1, 0.2, 0.4], dtype=torch.float64)
    expected = (x + shift.view(-1, 1, 1, 1)).clip(0, 1)
    torch.testing.assert_close(adjust_brightness(x, shift), expected)
    factor = torch.tensor([0.6, 0.9, 1.0, 1.4], dtype=torch.float64)
    mean = x.mean(dim=(2, 3), keepdim=True)  # each channel's own spatial mean
    expected = (mean + factor.view(-1, 1, 1, 1) * (x - mean)).clip(0, 1)
    torch.testing.assert_close(adjust_contrast(x, factor), expected)
    assert torch.equal(adjust_contrast(x, 1.0), x)  # identity is exact


def test_rgb_hsv_conversions_match_colorsys_and_round_trip():
    x = rand_images()
    x[0, :, 0, 0] = 0.3  # grey pixel: hue 0, saturation 0
    x[0, :, 0, 1] = 0.0  # black pixel
    x[0, 1, 0, 2] = x[0, 0, 0, 2]  # red and green tie
    hsv = rgb_to_hsv(x)
    torch.testing.assert_close(hsv, colorsys_map(x, colorsys.rgb_to_hsv))
    torch.testing.assert_close(hsv_to_rgb(hsv), x)
    assert hsv.min() >= 0 and hsv.max() <= 1


def test_saturation_scales_hsv_saturation_with_clipping():
    x = rand_images(seed=1)
    factor = torch.tensor([0.0, 0.8, 1.2, 3.0], dtype=torch.float64)
    hsv = colorsys_map(x, colorsys.rgb_to_hsv)
    hsv[:, 1] = (hsv[:, 1] * factor.view(-1, 1, 1)).clip(0, 1)
    expected = colorsys_map(hsv, colorsys.hsv_to_rgb)
    torch.testing.assert_close(adjust_saturation(x, factor), expected)
    # Factor 0 makes every pixel grey at its value V = max(R, G, B).
    grey = adjust_saturation(x, factor)[0]
    torch.testing.assert_close(grey, x[0].amax(dim=0, keepdim=True).expand(3, -1, -1))


def test_hue_shift_matches_colorsys_mod_1():
    x = rand_images(seed=2)
    shift = torch.tensor([-0.1, 0.05, 0.1, 0.5], dtype=torch.float64)
    hsv = colorsys_map(x, colorsys.rgb_to_hsv)
    hsv[:, 0] = torch.remainder(hsv[:, 0] + shift.view(-1, 1, 1), 1.0)
    expected = colorsys_map(hsv, colorsys.hsv_to_rgb)
    torch.testing.assert_close(adjust_hue(x, shift), expected)
    torch.testing.assert_close(adjust_hue(x, 0.0), x)
    torch.testing.assert_close(adjust_hue(adjust_hue(x, shift), -shift), x)


def test_grayscale_and_solarize_match_formulas():
    x = rand_images(seed=3)
    luma = 0.2989 * x[:, 0] + 0.5870 * x[:, 1] + 0.1140 * x[:, 2]
    gray = to_grayscale(x)
    assert gray.shape == x.shape
    for c in range(3):
        torch.testing.assert_close(gray[:, c], luma)
    x[0, 0, 0, :3] = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    expected = torch.where(x < 0.5, x, 1 - x)
    torch.testing.assert_close(solarize(x), expected)
    assert solarize(x)[0, 0, 0, :3].tolist() == [0.0, 0.5, 0.0]


def test_gaussian_kernel_matches_formula_and_sums_to_one():
    sigma = torch.tensor([0.1, 0.7, 2.0], dtype=torch.float64)
    kernels = gaussian_kernel1d(sigma, 9)
    taps = torch.arange(-4, 5, dtype=torch.float64)
    raw = torch.exp(-(taps**2) / (2 * sigma.view(-1, 1) ** 2))
    torch.testing.assert_close(kernels, raw / raw.sum(dim=1, keepdim=True))
    torch.testing.assert_close(kernels.sum(dim=1), torch.ones(3, dtype=torch.float64))
    assert [blur_kernel_size(s) for s in (8, 32, 96, 224)] == [3, 3, 9, 23]
    with pytest.raises(ValueError):
        gaussian_kernel1d(sigma, 4)


def test_gaussian_blur_is_a_separable_zero_padded_convolution():
    # The reference blurs with a depthwise convolution, padding="SAME": zeros outside.
    x = rand_images(n=2, h=7, w=8, seed=4)
    sigma = torch.tensor([0.5, 1.5], dtype=torch.float64)
    out = gaussian_blur(x, sigma, 5)
    for i in range(2):
        k = gaussian_kernel1d(sigma[i], 5)
        kernel2d = torch.outer(k, k)
        padded = np.pad(x[i].numpy(), ((0, 0), (2, 2), (2, 2)), mode="constant")
        expected = np.zeros_like(x[i].numpy())
        for dy in range(5):
            for dx in range(5):
                expected += kernel2d[dy, dx].item() * padded[:, dy : dy + 7, dx : dx + 8]
        np.testing.assert_allclose(out[i].numpy(), expected, atol=1e-12)
    flat = gaussian_blur(torch.full_like(x, 0.3), sigma, 5)
    # A constant image stays constant inside and darkens towards the zero border.
    torch.testing.assert_close(flat[..., 2:-2, 2:-2], x[..., 2:-2, 2:-2] * 0 + 0.3)
    assert bool((flat[..., 0, 0] < 0.3).all())


def test_jitter_applies_the_reported_factors_in_the_reported_order():
    # Crop = whole image, no flip: the view is the reported jitter applied in order.
    config = ViewConfig(
        crop_scale=(1.0, 1.0),
        crop_ratio=(1.0, 1.0),
        flip_prob=0.0,
        jitter_prob=0.7,
        grayscale_prob=0.0,
        blur_prob=0.0,
    )
    batch = torch.rand(48, 3, 6, 6, generator=gen(5))
    aug = BYOLAugment((config, config), 6, mean=(0, 0, 0), std=(1, 1, 1))
    view, params = aug.view(batch, config, generator=gen(6), return_params=True)
    ops = {
        "brightness": adjust_brightness,
        "contrast": adjust_contrast,
        "saturation": adjust_saturation,
        "hue": adjust_hue,
    }
    expected = batch.double().clone()
    for i in range(48):
        if params["jitter"][i]:
            for op_index in params["jitter_order"][i].tolist():
                factor = params["jitter_factors"][i, op_index].double()
                expected[i : i + 1] = ops[JITTER_OPS[op_index]](expected[i : i + 1], factor)
    torch.testing.assert_close(view.double(), expected, atol=1e-5, rtol=0)
    assert 0 < params["jitter"].sum() < 48
    assert sorted(params["jitter_order"][0].tolist()) == [0, 1, 2, 3]
    factors = params["jitter_factors"]
    assert factors[:, 0].abs().max() <= 0.4 and factors[:, 3].abs().max() <= 0.1
    assert factors[:, 1].min() >= 0.6 and factors[:, 1].max() <= 1.4
    assert factors[:, 2].min() >= 0.8 and factors[:, 2].max() <= 1.2


# ----------------------------------------------------------------------------- the module


def test_same_seed_same_views_and_different_seed_different_views():
    batch = uint8_images(16, 3, 12, 12)
    aug = BYOLAugment("imagenet", 10)
    a1, a2 = aug(batch, generator=gen(7))
    b1, b2 = aug(batch, generator=gen(7))
    c1, c2 = aug(batch, generator=gen(8))
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    assert (a1 - c1).abs().mean() > 0.1 and (a2 - c2).abs().mean() > 0.1
    assert (a1 - a2).abs().mean() > 0.1  # the two views differ


@pytest.mark.parametrize("preset", ["imagenet", "cifar"])
def test_outputs_normalised_from_unit_range(preset):
    batch = uint8_images(64, 3, 16, 16)
    batch[0] = 255
    batch[1] = 0
    aug = BYOLAugment(preset, 12)
    for view in aug(batch, generator=gen(9)):
        assert view.shape == (64, 3, 12, 12) and view.dtype == torch.float32
        pixels = unnormalise(view, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
        assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
        assert pixels.std() > 0.05


def test_uint8_and_float_inputs_agree_and_out_dtype_is_honoured():
    batch = uint8_images(8, 3, 12, 12)
    aug = BYOLAugment("cifar", (8, 10))
    from_uint8 = aug(batch, generator=gen(10))
    from_float = aug(batch.float() / 255, generator=gen(10))
    for u, f in zip(from_uint8, from_float, strict=True):
        assert u.shape == (8, 3, 8, 10)
        torch.testing.assert_close(u, f, atol=1e-5, rtol=0)
    half = BYOLAugment("cifar", 8, out_dtype=torch.bfloat16)(batch, generator=gen(10))
    full = BYOLAugment("cifar", 8)(batch, generator=gen(10))
    assert half[0].dtype == half[1].dtype == torch.bfloat16
    torch.testing.assert_close(half[0].float(), full[0], atol=0.02, rtol=0)
    # float64 input: computed in float64, returned in out_dtype.
    double = batch.double() / 255
    assert aug(double, generator=gen(10))[0].dtype == torch.float32
    wide = BYOLAugment("cifar", (8, 10), out_dtype=torch.float64)(double, generator=gen(10))
    assert wide[0].dtype == torch.float64
    torch.testing.assert_close(wide[0].float(), from_uint8[0], atol=1e-4, rtol=0)


def test_single_channel_images():
    batch = uint8_images(32, 1, 10, 10)
    aug = BYOLAugment("fashion-mnist", 8)
    view1, view2, p1, p2 = aug(batch, generator=gen(11), return_params=True)
    assert view1.shape == view2.shape == (32, 1, 8, 8)
    assert not p1["grayscale"].any() and not p2["grayscale"].any()
    for view in (view1, view2):
        pixels = unnormalise(view, (0.2860,), (0.3530,))
        assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    # Saturation and hue have no effect on one channel: a view jittering only those equals
    # the geometry-only view drawn from the same seed.
    hue_sat = replace_geometry(jitter_prob=1.0, brightness=0.0, contrast=0.0)
    torch.testing.assert_close(
        aug.view(batch, hue_sat, gen(12)), aug.view(batch, GEOMETRY_ONLY, gen(12))
    )


def test_eval_view_is_deterministic_resize_and_normalisation():
    batch = uint8_images(4, 3, 8, 8)
    aug = BYOLAugment("cifar", 8)
    same = aug.eval_view(batch)
    expected = (batch.float() / 255 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / (
        torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    )
    torch.testing.assert_close(same, expected)
    # A horizontal ramp: the shorter side is resized 16 -> 8 (12 columns), the centre 8 kept.
    # Antialiased bilinear keeps a ramp a ramp away from the edges, so output column j holds
    # the ramp at the centre of resized column j + 2, input x = 2 (j + 2) + 0.5.
    wide = (torch.arange(24.0) / 24).expand(2, 3, 16, 24)
    out = BYOLAugment("cifar", 8, mean=(0, 0, 0), std=(1, 1, 1)).eval_view(wide)
    assert out.shape == (2, 3, 8, 8)
    expected = (2 * (torch.arange(8.0) + 2) + 0.5) / 24
    torch.testing.assert_close(out, expected.expand(2, 3, 8, 8), atol=1e-6, rtol=0)


def test_configuration_errors_name_the_value():
    with pytest.raises(ConfigError, match="valid choices: cifar, fashion-mnist, imagenet"):
        BYOLAugment("imagenette", 32)
    with pytest.raises(ConfigError, match="flip_prob"):
        ViewConfig(flip_prob=1.5)
    with pytest.raises(ConfigError, match="crop_scale"):
        ViewConfig(crop_scale=(0.5, 0.1))
    with pytest.raises(ConfigError, match="interpolation"):
        BYOLAugment("cifar", 32, interpolation="lanczos")
    with pytest.raises(ConfigError, match="channels"):
        BYOLAugment("cifar", 8, mean=(0.5,), std=(0.5,))(torch.rand(2, 3, 8, 8))
    with pytest.raises(DataError, match=r"\(2, 4, 8, 8\)"):
        BYOLAugment("cifar", 8)(torch.rand(2, 4, 8, 8))
    with pytest.raises(DataError, match="int64"):
        BYOLAugment("cifar", 8)(torch.zeros(2, 3, 8, 8, dtype=torch.int64))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batches_stay_on_device_and_match_cpu_with_a_cpu_generator():
    batch = uint8_images(32, 3, 16, 16)
    aug = BYOLAugment("imagenet", 12)
    cpu = aug(batch, generator=gen(13))
    cuda = aug(batch.cuda(), generator=gen(13))
    for c, g in zip(cpu, cuda, strict=True):
        assert g.device.type == "cuda" and g.dtype == torch.float32
        torch.testing.assert_close(g.cpu(), c, atol=1e-4, rtol=0)
    cuda_gen = torch.Generator(device="cuda").manual_seed(14)
    again = torch.Generator(device="cuda").manual_seed(14)
    assert torch.equal(
        aug(batch.cuda(), generator=cuda_gen)[0], aug(batch.cuda(), generator=again)[0]
    )
