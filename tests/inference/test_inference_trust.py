"""Temperature scaling, the quality estimate and the out-of-distribution description."""

from __future__ import annotations

import numpy as np
import pytest

from lesionseg.inference.trust import (
    IMAGE_FEATURES,
    ImageDescription,
    QualityEstimator,
    apply_temperature,
    auroc,
    calibrated_threshold,
    expected_dice,
    fit_temperature,
    image_features,
    ledoit_wolf,
    quality_signal,
    spearman,
)


@pytest.mark.parametrize("true_t", [0.5, 1.0, 2.5])
def test_fit_temperature_recovers_known_temperature(true_t: float) -> None:
    # Labels drawn from sigmoid(z / T): the NLL-optimal temperature on the logits z is T.
    rng = np.random.default_rng(0)
    z = rng.normal(0, 4, size=400_000)
    y = rng.uniform(size=z.size) < 1 / (1 + np.exp(-z / true_t))
    assert fit_temperature(z, y) == pytest.approx(true_t, rel=0.03)


def test_fit_temperature_subsamples_and_refuses_bad_input() -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(0, 3, size=50_000)
    y = rng.uniform(size=z.size) < 1 / (1 + np.exp(-z / 2))
    assert fit_temperature(z, y, max_pixels=20_000) == pytest.approx(2.0, rel=0.1)
    with pytest.raises(ValueError, match="as many"):
        fit_temperature(z, y[:10])
    with pytest.raises(ValueError, match="finite"):
        fit_temperature(np.array([np.inf, 0.0]), np.array([1, 0]))
    with pytest.raises(ValueError, match="bounds"):
        fit_temperature(z, y, bounds=(2.0, 1.0))


def test_temperature_keeps_the_mask() -> None:
    rng = np.random.default_rng(2)
    p = rng.uniform(size=(64, 64)).astype(np.float32)
    for t in (0.4, 1.0, 3.0):
        cal = apply_temperature(p, t)
        assert np.array_equal(cal > calibrated_threshold(0.5, t), p > 0.5)
        assert np.array_equal(cal > calibrated_threshold(0.3, t), p > 0.3)
    # T > 1 pulls probabilities towards 0.5, T < 1 pushes them away.
    assert apply_temperature(np.array([0.9]), 2.0)[0] < 0.9 < apply_temperature(np.array([0.9]), 0.5)[0]
    assert calibrated_threshold(0.5, 3.0) == pytest.approx(0.5)


def test_expected_dice_hand_computed() -> None:
    p = np.array([[0.9, 0.5], [0.1, 0.0]])
    m = np.array([[1, 1], [0, 0]])
    assert expected_dice(p, m) == pytest.approx(2 * 1.4 / (1.5 + 2))
    # Empty mask: the probability that the truth is empty, prod(1 - p).
    assert expected_dice(p, np.zeros_like(m)) == pytest.approx(0.1 * 0.5 * 0.9 * 1.0)
    # Disagreeing passes lower the signal below that of either agreeing pass.
    sure = m.astype(float)
    assert quality_signal(sure, m) == pytest.approx(1.0)
    assert quality_signal([sure, 1 - sure], m) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="shape"):
        expected_dice(p, np.ones((3, 3)))


def test_spearman_and_auroc_hand_computed() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # Ranks x 1,2,3 and y 1,3,2: rho = 1 - 6 * 2 / (3 * 8) = 0.5.
    assert spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))
    # Positives 0.8 and 0.4 against negatives 0.6, 0.2: 3 of 4 pairs ordered -> 0.75; a tie counts half.
    assert auroc([0.8, 0.4, 0.6, 0.2], [True, True, False, False]) == pytest.approx(0.75)
    assert auroc([0.5, 0.5], [True, False]) == pytest.approx(0.5)
    assert np.isnan(auroc([0.1, 0.2], [False, False]))


def test_quality_estimator_fits_a_monotone_curve_and_cut() -> None:
    rng = np.random.default_rng(3)
    signal = rng.uniform(0.5, 0.99, size=60)
    # True Dice a noisy, shifted version of the signal: the fit must learn the shift and keep the order.
    logit = np.log(signal / (1 - signal))
    dice = 1 / (1 + np.exp(-(1.0 * logit - 0.3 + rng.normal(0, 0.1, size=signal.size))))  # 42 poor, 18 good
    est = QualityEstimator.fit(signal, dice)
    assert est.b > 0
    pred = est.predict(signal)
    assert np.all(np.diff(pred[np.argsort(signal)]) >= 0)
    assert np.mean(np.abs(pred - dice)) < np.mean(np.abs(signal - dice))
    assert est.rule == "youden" and 0 < est.low_confidence_below < 1
    assert QualityEstimator.from_dict(est.to_dict()).predict(0.9) == pytest.approx(est.predict(0.9), abs=1e-4)


def test_quality_estimator_without_poor_validation_images_cuts_at_the_dice_bar() -> None:
    est = QualityEstimator.fit([0.9, 0.92, 0.95], [0.91, 0.93, 0.96])
    assert est.rule == "dice_0.8" and est.low_confidence_below == 0.8
    assert est.is_low_confidence(0.7) and not est.is_low_confidence(0.9)
    # A falling fit is clamped to a rising one.
    assert QualityEstimator.fit([0.6, 0.9, 0.99], [0.99, 0.9, 0.6], prior_weight=0.0).b > 0
    with pytest.raises(ValueError, match="b > 0"):
        QualityEstimator(b=-1.0)


def test_quality_estimator_needs_five_poor_images_for_a_fitted_cut() -> None:
    rng = np.random.default_rng(5)
    signal = rng.uniform(0.85, 0.99, size=40)
    dice = signal.copy()
    dice[:2] = 0.7  # two poor images among 40: too few to place a cut on
    est = QualityEstimator.fit(signal, dice)
    assert est.rule == "dice_0.8" and est.low_confidence_below == 0.8
    dice[:5] = 0.7
    assert QualityEstimator.fit(signal, dice).rule == "youden"


def test_ledoit_wolf_shrinks_a_noisy_covariance() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(10, 8))  # true covariance: identity; 10 samples for 8 dims is noisy
    cov, shrink = ledoit_wolf(x)
    assert 0 < shrink <= 1
    raw = np.cov(x.T, bias=True)
    assert np.linalg.norm(cov - np.eye(8)) < np.linalg.norm(raw - np.eye(8))
    many = rng.normal(size=(5000, 3)) @ np.diag([1.0, 2.0, 3.0])
    cov_many, shrink_many = ledoit_wolf(many)
    assert shrink_many < 0.05 and np.allclose(np.diag(cov_many), [1, 4, 9], rtol=0.1)


def _images(rng: np.random.Generator, n: int, colour: tuple[int, int, int]) -> list[np.ndarray]:
    base = np.asarray(colour, dtype=np.float64)
    out = []
    for _ in range(n):
        im = base + rng.normal(0, 12, size=3) + rng.normal(0, 20, size=(96, 128, 3))
        out.append(np.clip(im, 0, 255).astype(np.uint8))
    return out


def test_image_description_flags_a_shifted_distribution() -> None:
    rng = np.random.default_rng(5)
    train = np.array([image_features(im) for im in _images(rng, 80, (180, 120, 100))])
    val = np.array([image_features(im) for im in _images(rng, 15, (180, 120, 100))])
    same = np.array([image_features(im) for im in _images(rng, 100, (180, 120, 100))])
    shifted = np.array([image_features(im) for im in _images(rng, 50, (90, 60, 140))])
    desc = ImageDescription.fit(train)
    assert not np.isfinite(desc.threshold)  # no threshold before validation
    desc = desc.with_threshold(val)
    assert np.mean(desc.score(same) > desc.threshold) <= 0.1
    assert np.all(desc.score(shifted) > desc.threshold)
    gray = np.repeat(_images(rng, 1, (150, 150, 150))[0][..., :1], 3, axis=2)
    assert desc.is_out_of_distribution(desc.score_image(gray[..., 0]))
    again = ImageDescription.from_dict(desc.to_dict())
    assert again.score(shifted[0]) == pytest.approx(desc.score(shifted[0]), rel=1e-4)
    assert again.threshold == pytest.approx(desc.threshold, rel=1e-5)


def test_image_features_and_description_refuse_bad_input() -> None:
    assert image_features(np.zeros((40, 50, 1), np.uint8)).shape == (len(IMAGE_FEATURES),)
    with pytest.raises(ValueError, match="uint8"):
        image_features(np.zeros((40, 50, 3), np.float32))
    with pytest.raises(ValueError, match="feature array"):
        ImageDescription.fit(np.zeros((5, 3)))
    desc = ImageDescription.fit(np.random.default_rng(0).normal(size=(20, len(IMAGE_FEATURES))))
    with pytest.raises(ValueError, match="at least 3"):
        desc.with_threshold(np.zeros((2, len(IMAGE_FEATURES))))
    bad = desc.to_dict()
    bad["features"] = bad["features"][:-1]
    with pytest.raises(ValueError, match="features"):
        ImageDescription.from_dict(bad)
