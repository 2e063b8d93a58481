"""Colour deconvolution, Macenko stain estimation and normalisation, HED stain augmentation."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from pathviewer.core.stain import (
    HED_VECTORS,
    StainNormalizer,
    combine_stains,
    complete_stain_matrix,
    estimate_stain_vectors,
    separate_stains,
    stain_statistics,
)
from pathviewer.ml.augment import HEDJitter, StainNormalize

#: Non-standard stains for the estimation tests: a purpler haematoxylin, a pinker eosin.
H_OTHER = np.array([0.55, 0.75, 0.37])
E_OTHER = np.array([0.20, 0.90, 0.35])
#: Eosin as the synthetic slides use it (bluer than Ruifrok's).
E_SYNTH = np.array([0.22, 0.80, 0.56])


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _concentrations(size: int = 128, seed: int = 0) -> np.ndarray:
    """``(size, size, 3)`` H, E (and zero DAB) concentrations: pure H, pure E, mixtures, glass."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(4, size=(size, size), p=[0.3, 0.3, 0.3, 0.1])  # H, E, both, glass
    h = rng.uniform(0.5, 1.2, (size, size)) * np.isin(kind, (0, 2))
    e = rng.uniform(0.8, 1.3, (size, size)) * np.isin(kind, (1, 2))
    return np.stack([h, e, np.zeros_like(h)], axis=-1)


def _two_stain_image(
    h_vector: np.ndarray, e_vector: np.ndarray, concentrations: np.ndarray
) -> np.ndarray:
    """uint8 RGB of H and E concentrations with the given (unnormalised) stain vectors."""
    matrix = complete_stain_matrix(np.stack([h_vector, e_vector]))
    return combine_stains(concentrations, matrix)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(_unit(a), _unit(b)))


# ----------------------------------------------------------------------------------------------
# Deconvolution
# ----------------------------------------------------------------------------------------------


def test_deconvolution_recovers_known_concentrations() -> None:
    conc = _concentrations().reshape(-1, 3)
    od = conc @ HED_VECTORS
    exact = 255.0 * np.power(10.0, -od)  # float intensities: no quantisation
    assert np.abs(separate_stains(exact) - conc).max() < 1e-3

    # uint8: a grey level is an OD step of 0.434 / I, so the error grows in dark pixels.
    quantised = combine_stains(conc)
    error = np.abs(separate_stains(quantised) - conc)
    assert error[quantised.min(axis=-1) >= 20].max() < 0.05
    assert error.max() < 0.2
    assert error.mean() < 0.01


@pytest.mark.parametrize("pair", [(0, 1), (0, 2)], ids=["H&E", "H-DAB"])
def test_two_stain_matrix_is_well_conditioned_and_recovers_both_stains(
    pair: tuple[int, int],
) -> None:
    # The residual of two stains is their plane's normal: with H-DAB an absolute cross product
    # lands next to haematoxylin (condition number ~280), and uint8 rounding then swamps DAB.
    matrix = complete_stain_matrix(HED_VECTORS[list(pair)])
    np.testing.assert_allclose(matrix[:2] @ matrix[2], 0.0, atol=1e-12)
    assert np.linalg.cond(matrix) < 5
    conc = _concentrations(seed=4)
    image = combine_stains(conc, matrix)
    error = np.abs(separate_stains(image, matrix)[..., :2] - conc[..., :2])
    assert error[image.min(axis=-1) >= 20].max() < 0.05
    assert error.mean() < 0.01


def test_separate_combine_round_trip_within_a_grey_level() -> None:
    rng = np.random.default_rng(1)
    random_rgb = rng.integers(1, 256, (64, 64, 3), dtype=np.uint8)
    he_like = _two_stain_image(HED_VECTORS[0], E_SYNTH, _concentrations(64, seed=2))
    two_stain = complete_stain_matrix(np.stack([H_OTHER, E_OTHER]))
    for image in (random_rgb, he_like):
        for matrix in (HED_VECTORS, two_stain):
            back = combine_stains(separate_stains(image, matrix), matrix)
            assert back.dtype == np.uint8 and back.shape == image.shape
            assert np.abs(back.astype(int) - image.astype(int)).max() <= 1


# ----------------------------------------------------------------------------------------------
# Macenko estimation
# ----------------------------------------------------------------------------------------------


def test_macenko_recovers_non_standard_stain_vectors() -> None:
    conc = _concentrations(seed=3)
    image = _two_stain_image(H_OTHER, E_OTHER, conc)
    matrix, max_conc = estimate_stain_vectors(image)
    assert matrix.shape == (3, 3) and max_conc.shape == (2,)
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-9)
    assert np.all(matrix[:2] >= 0)  # stains are positive; the residual is their plane's normal
    np.testing.assert_allclose(matrix[:2] @ matrix[2], 0.0, atol=1e-9)
    assert _cosine(matrix[0], H_OTHER) > 0.99  # H first
    assert _cosine(matrix[1], E_OTHER) > 0.99
    # Robust maxima: near the true 99th percentiles of the stained pixels.
    for k in range(2):
        stained = conc[..., k][conc[..., k] > 0]
        assert max_conc[k] == pytest.approx(np.percentile(stained, 99), rel=0.1)


def test_macenko_orders_haematoxylin_first_on_ruifrok_stains() -> None:
    image = _two_stain_image(HED_VECTORS[0], E_SYNTH, _concentrations(seed=4))
    matrix, _ = estimate_stain_vectors(image)
    assert _cosine(matrix[0], HED_VECTORS[0]) > 0.99
    assert _cosine(matrix[1], E_SYNTH) > 0.99


def test_macenko_rejects_images_without_tissue() -> None:
    blank = np.full((64, 64, 3), 250, np.uint8)
    with pytest.raises(ValueError, match="too little tissue"):
        estimate_stain_vectors(blank)
    one_colour = np.full((64, 64, 3), (150, 60, 140), np.uint8)
    with pytest.raises(ValueError, match="single colour"):
        estimate_stain_vectors(one_colour)


# ----------------------------------------------------------------------------------------------
# Normalisation
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def original_and_restained() -> tuple[np.ndarray, np.ndarray]:
    """An H&E image, and the same tissue stained with other vectors and intensities."""
    conc = _concentrations(seed=5)
    original = _two_stain_image(HED_VECTORS[0], E_SYNTH, conc)
    restained_conc = conc * np.array([1.25, 0.75, 0.0])  # darker H, paler E
    restained = _two_stain_image(H_OTHER, E_OTHER, restained_conc)
    return original, restained


def _mae(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def test_normalisation_restores_the_original_stains(
    original_and_restained: tuple[np.ndarray, np.ndarray],
) -> None:
    original, restained = original_and_restained
    # Fit on the original as a "cohort" of two patches (pooled pixels).
    normalizer = StainNormalizer().fit([original[:64], original[64:]])
    normalised = normalizer.transform(restained)
    assert normalised.dtype == np.uint8 and normalised.shape == original.shape
    before, after = _mae(restained, original), _mae(normalised, original)
    assert after < 6.0
    assert after < before / 4


def test_normaliser_dict_round_trip_is_identical(
    original_and_restained: tuple[np.ndarray, np.ndarray],
) -> None:
    original, restained = original_and_restained
    normalizer = StainNormalizer().fit([original])
    d = normalizer.to_dict()
    assert d["method"] == "macenko"
    assert json.loads(json.dumps(d)) == d  # plain JSON types only
    buffer = io.BytesIO()
    torch.save(d, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True) == d

    restored = StainNormalizer.from_dict(json.loads(json.dumps(d)))
    assert restored == normalizer and restored.to_dict() == d
    assert np.array_equal(restored.transform(restained), normalizer.transform(restained))
    assert StainNormalizer.from_dict(d) != StainNormalizer().fit([restained])
    with pytest.raises(ValueError, match="method"):
        StainNormalizer.from_dict({**d, "method": "reinhard"})


def test_slide_scope_keeps_differences_within_a_slide(
    original_and_restained: tuple[np.ndarray, np.ndarray],
) -> None:
    """Per patch, a darker (hyperchromatic) patch is scaled back to the target; per slide not."""
    original, _ = original_and_restained
    conc = _concentrations(seed=9)
    normal = _two_stain_image(H_OTHER, E_OTHER, conc)
    dark = _two_stain_image(H_OTHER, E_OTHER, conc * np.array([1.4, 1.0, 0.0]))
    target = StainNormalizer().fit([original])

    def mean_h(image: np.ndarray) -> float:
        return float(separate_stains(image, target.stain_matrix)[..., 0].mean())

    per_patch = [target.transform(image) for image in (normal, dark)]
    slide_norm = StainNormalizer(scope="slide").fit([original])
    source = slide_norm.estimate_source([normal, dark])
    assert source is not None
    per_slide = [slide_norm.transform(image, source) for image in (normal, dark)]
    # The slide's own stains are mapped either way (H closer to the target's than before) ...
    assert _cosine(source[0][0], H_OTHER) > 0.99
    # ... but only per slide does the dark patch keep most of its 40 % extra haematoxylin.
    assert mean_h(per_slide[1]) / mean_h(per_slide[0]) > 1.3
    assert mean_h(per_patch[1]) / mean_h(per_patch[0]) < 1.1
    d = slide_norm.to_dict()
    assert d["scope"] == "slide" and StainNormalizer.from_dict(d) == slide_norm
    assert StainNormalizer.from_dict(d) != target
    with pytest.raises(ValueError, match="scope"):
        StainNormalizer.from_dict({**d, "scope": "cohort"})
    assert slide_norm.estimate_source([np.full((32, 32, 3), 250, np.uint8)]) is None


def test_normaliser_fit_is_deterministic_and_subsampled(
    original_and_restained: tuple[np.ndarray, np.ndarray],
) -> None:
    original, _ = original_and_restained
    patches = [original[:64, :64], original[:64, 64:], original[64:, :64], original[64:, 64:]]
    full = StainNormalizer().fit(patches)
    small_a = StainNormalizer(max_pixels=3000).fit(patches)
    small_b = StainNormalizer(max_pixels=3000).fit(iter(patches))  # any iterable, read once
    assert small_a == small_b
    assert small_a != full  # really subsampled
    for k in range(2):
        assert _cosine(small_a.stain_matrix[k], full.stain_matrix[k]) > 0.999
    # One image under the pixel limit: the same target as estimating that image directly.
    matrix, maxima = estimate_stain_vectors(original)
    single = StainNormalizer().fit([original])
    np.testing.assert_allclose(single.stain_matrix, matrix)
    np.testing.assert_allclose(single.max_concentrations, maxima)


def test_normaliser_edge_cases(original_and_restained: tuple[np.ndarray, np.ndarray]) -> None:
    original, _ = original_and_restained
    with pytest.raises(RuntimeError, match="not fitted"):
        StainNormalizer().transform(original)
    with pytest.raises(ValueError, match="too little tissue"):
        StainNormalizer().fit([np.full((32, 32, 3), 255, np.uint8)])
    normalizer = StainNormalizer().fit([original])
    glass = np.full((32, 32, 3), 240, np.uint8)
    assert np.array_equal(normalizer.transform(glass), glass)  # no tissue: unchanged


def test_stain_statistics() -> None:
    white = stain_statistics(np.full((16, 16, 3), 255, np.uint8))
    assert white == {"mean_h": 0.0, "mean_e": 0.0, "tissue_fraction": 0.0}
    conc = _concentrations(seed=6)
    stats = stain_statistics(combine_stains(conc))  # Ruifrok stains: exact means
    tissue = conc.sum(axis=-1) > 0
    assert stats["tissue_fraction"] == pytest.approx(tissue.mean(), abs=0.01)
    assert stats["mean_h"] == pytest.approx(conc[..., 0][tissue].mean(), rel=0.03)
    assert stats["mean_e"] == pytest.approx(conc[..., 1][tissue].mean(), rel=0.03)
    paler = stain_statistics(combine_stains(conc * 0.5))
    assert paler["mean_h"] < 0.6 * stats["mean_h"]


# ----------------------------------------------------------------------------------------------
# HED jitter and the tensor transforms
# ----------------------------------------------------------------------------------------------


def _he_tensor(size: int = 64, seed: int = 7) -> torch.Tensor:
    image = _two_stain_image(HED_VECTORS[0], E_SYNTH, _concentrations(size, seed))
    return torch.from_numpy(image).permute(2, 0, 1).contiguous()


def test_hed_jitter_keeps_shape_and_dtype() -> None:
    jitter = HEDJitter()
    single = _he_tensor()
    batch = torch.stack([_he_tensor(seed=s) for s in range(4)])
    for x in (single, batch):
        y = jitter(x)
        assert y.dtype == torch.uint8 and y.shape == x.shape
    floats = single.float() / 255
    before = floats.clone()
    y = jitter(floats)
    assert y.dtype == torch.float32 and y.shape == floats.shape
    assert 0.0 <= float(y.min()) and float(y.max()) <= 1.0
    assert torch.equal(floats, before)  # input untouched
    with pytest.raises(ValueError):
        jitter(torch.zeros(4, 8, 8, dtype=torch.uint8))


def test_hed_jitter_without_jitter_is_identity() -> None:
    identity = HEDJitter(sigma=0.0, bias=0.0)
    rng = np.random.default_rng(8)
    random_rgb = torch.from_numpy(rng.integers(0, 256, (3, 32, 32), dtype=np.uint8))
    for x in (_he_tensor(), random_rgb):
        difference = (identity(x).int() - x.int()).abs()
        assert int(difference.max()) <= 1  # 0 is floored at one grey level, as in core.stain


def test_hed_jitter_randomness_follows_the_global_seed() -> None:
    jitter = HEDJitter.preset("strong")
    x = _he_tensor()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        a = jitter(x)
        torch.manual_seed(1)
        b = jitter(x)
        torch.manual_seed(2)
        c = jitter(x)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert (a.int() - x.int()).abs().float().mean() > 2.0  # it does change colours
    # Each image of a batch draws its own factors.
    torch.manual_seed(3)
    batch = jitter(torch.stack([x, x]))
    assert not torch.equal(batch[0], batch[1])


def test_hed_jitter_keeps_white_near_white() -> None:
    white = torch.full((8, 3, 16, 16), 255, dtype=torch.uint8)
    torch.manual_seed(4)
    light = HEDJitter()(white)
    assert int(light.min()) >= 190 and float(light.float().mean()) > 235
    torch.manual_seed(4)
    assert int(HEDJitter(sigma=0.3, bias=0.0)(white).min()) == 255  # scaling keeps OD 0


def test_hed_jitter_inside_v2_compose() -> None:
    pipeline = v2.Compose(
        [v2.RandomHorizontalFlip(0.5), HEDJitter(), v2.RandomResizedCrop(32, antialias=True)]
    )
    x = _he_tensor()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        a = pipeline(x)
        torch.manual_seed(5)
        b = pipeline(x)
    assert a.dtype == torch.uint8 and a.shape == (3, 32, 32)
    assert torch.equal(a, b)
    # Samples with labels: the image is jittered, the label passes through, types are kept.
    image, label = v2.Compose([HEDJitter()])(tv_tensors.Image(x), 3)
    assert isinstance(image, tv_tensors.Image) and label == 3
    with pytest.raises(TypeError, match="PILToTensor"):
        HEDJitter()(v2.functional.to_pil_image(x))


def test_stain_normalize_module_matches_numpy(
    original_and_restained: tuple[np.ndarray, np.ndarray],
) -> None:
    original, restained = original_and_restained
    normalizer = StainNormalizer().fit([original])
    module = StainNormalize(normalizer.to_dict())  # a saved target works as well
    x = torch.from_numpy(restained).permute(2, 0, 1).contiguous()
    expected = torch.from_numpy(normalizer.transform(restained)).permute(2, 0, 1)
    assert torch.equal(module(x), expected)
    batch = module(torch.stack([x, x]))
    assert batch.shape == (2, *x.shape) and torch.equal(batch[1], expected)
    composed = v2.Compose([StainNormalize(normalizer), HEDJitter(0.0, 0.0)])(x)
    assert (composed.int() - expected.int()).abs().max() <= 1
    with pytest.raises(TypeError):
        module(x.float())
    with pytest.raises(ValueError, match="fitted"):
        StainNormalize(StainNormalizer())


# ----------------------------------------------------------------------------------------------
# Real slide
# ----------------------------------------------------------------------------------------------


def test_macenko_on_real_tissue_finds_ruifrok_like_haematoxylin(cmu_small: Path) -> None:
    openslide = pytest.importorskip("openslide")
    with openslide.OpenSlide(str(cmu_small)) as slide:
        crop = np.asarray(slide.read_region((800, 1200), 0, (512, 512)).convert("RGB"))
    matrix, max_conc = estimate_stain_vectors(crop)
    assert _cosine(matrix[0], HED_VECTORS[0]) > 0.9
    assert _cosine(matrix[1], HED_VECTORS[1]) > 0.9
    assert np.all(max_conc > 0.2)
    # Normalising a crop to its own stains leaves it (nearly) unchanged.
    assert _mae(StainNormalizer().fit([crop]).transform(crop), crop) < 1.0
    # Real pixels have negative Ruifrok concentrations; no jitter must still mean no change.
    x = torch.from_numpy(np.array(crop)).permute(2, 0, 1)
    assert int((HEDJitter(0.0, 0.0)(x).int() - x.int()).abs().max()) <= 1
