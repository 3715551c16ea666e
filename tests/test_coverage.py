"""Mode coverage: exact answers on exact samples and on hand-made collapses."""
from __future__ import annotations

import math

import jax
import numpy as np
import pytest

from dsm_jax import coverage, toy as toys


def test_eight_gaussians_exact_samples_cover_every_mode_and_off_support_is_exp_minus_4_5():
    # Clean samples at σ = 0: the distance to the own centre is Rayleigh(s), so P(z > 3) =
    # exp(−9/2) = 0.0111 (the 3s disc stays inside each mode's half-way region).
    t = toys.get_toy("eight_gaussians")
    n = 100_000
    c = coverage.toy_coverage(t, t.sample(jax.random.PRNGKey(0), n), 0.0)
    exact = math.exp(-4.5)
    assert abs(c["off_support"] - exact) < 4 * math.sqrt(exact * (1 - exact) / n)
    np.testing.assert_allclose(c["mode_weights"], 1 / 8, atol=4 * math.sqrt(1 / 8 * 7 / 8 / n))
    assert 0.95 < c["mode_weight_min"] <= 1 <= c["mode_weight_max"] < 1.05
    assert math.isclose(sum(c["mode_weights"]), 1.0, rel_tol=1e-6)


@pytest.mark.parametrize("name", toys.TOY_NAMES)
def test_exact_samples_of_every_toy_are_uniform_over_components_and_on_support(name):
    t = toys.get_toy(name)
    c = coverage.toy_coverage(t, t.sample(jax.random.PRNGKey(1), 40_000), 0.2)
    assert len(c["mode_weights"]) == t.n_components
    assert 0.9 < c["mode_weight_min"] and c["mode_weight_max"] < 1.1, c
    assert c["off_support"] < 0.005, c


def test_one_mode_collapse_is_reported():
    t = toys.get_toy("eight_gaussians")
    centre = np.array([[4 / math.sqrt(2), 0.0]], np.float32)  # mode 0 (angle 0)
    samples = centre + 0.05 * np.random.default_rng(0).normal(size=(1000, 2)).astype(np.float32)
    c = coverage.toy_coverage(t, samples, 0.2)
    assert c["mode_weights"][0] == 1.0 and sum(c["mode_weights"][1:]) == 0.0
    assert c["mode_weight_min"] == 0.0 and c["mode_weight_max"] == 8.0
    assert c["off_support"] == 0.0
    # The origin is far from every mode: all off support.
    assert coverage.toy_coverage(t, np.zeros((10, 2), np.float32), 0.2)["off_support"] == 1.0


def test_rings_one_ring_only_and_checkerboard_outside_the_squares():
    rings = toys.get_toy("rings")
    a = np.linspace(0, 2 * np.pi, 500, endpoint=False)
    on_ring_1 = 2.25 * np.stack([np.cos(a), np.sin(a)], -1).astype(np.float32)  # radius 3 · 0.75
    c = coverage.toy_coverage(rings, on_ring_1, 0.2)
    assert c["mode_weights"] == [0.0, 1.0, 0.0, 0.0] and c["off_support"] == 0.0
    cb = toys.get_toy("checkerboard")
    # (1, 1) lies in an empty square, 1 from the nearest full one: 5σ at σ = 0.2
    c = coverage.toy_coverage(cb, np.array([[1.0, 1.0], [-3.0, 3.0]], np.float32), 0.2)
    assert c["off_support"] == 0.5


def test_toy_coverage_refuses_bad_samples():
    t = toys.get_toy("rings")
    with pytest.raises(ValueError, match="`samples` holds 1 non-finite"):
        coverage.toy_coverage(t, np.array([[0.0, 1.0], [np.nan, 0.0]]), 0.2)
    with pytest.raises(ValueError, match=r"`samples` must have shape \(n, 2\)"):
        coverage.toy_coverage(t, np.zeros((4, 3)), 0.2)
    with pytest.raises(ValueError, match="off_support_z"):
        coverage.toy_coverage(t, np.zeros((4, 2)), 0.2, off_support_z=0)


def test_class_coverage_exact_on_a_hand_made_label_set():
    labels = np.array([0, 0, 1, 2, 2, 2, 3, 3, 3, 3])
    reference = np.repeat(np.arange(4), 5)  # uniform
    c = coverage.class_coverage(labels, reference, n_classes=4, min_fraction=0.15)
    np.testing.assert_allclose(c["class_histogram"], [0.2, 0.1, 0.3, 0.4])
    expected_kl = sum(h * math.log(h / 0.25) for h in (0.2, 0.1, 0.3, 0.4))
    assert math.isclose(c["class_kl"], expected_kl, rel_tol=1e-9)
    assert c["classes_under"] == 1 and c["class_min"] == pytest.approx(0.1)


def test_one_class_sample_set_reports_nine_classes_under_two_percent():
    reference = np.repeat(np.arange(10), 100)
    c = coverage.class_coverage(np.full(1000, 7), reference)
    assert c["classes_under"] == 9
    assert math.isclose(c["class_kl"], math.log(10), rel_tol=1e-9)
    assert coverage.class_coverage(reference, reference)["class_kl"] == 0.0


def test_class_coverage_refuses_bad_labels():
    ref = np.arange(10)
    with pytest.raises(TypeError, match="`labels` must be an array of integer class labels"):
        coverage.class_coverage(np.array([0.5, 1.0]), ref)  # a wrong type
    with pytest.raises(ValueError, match="`labels` must be a non-empty 1-D array of integer"):
        coverage.class_coverage(np.array([], int), ref)  # a wrong value
    with pytest.raises(ValueError, match=r"`labels` must hold labels in \[0, 10\)"):
        coverage.class_coverage(np.array([0, 12]), ref)
    with pytest.raises(ValueError, match="no sample of classes"):
        coverage.class_coverage(np.array([0, 9]), np.arange(5), n_classes=10)
    with pytest.raises(ValueError, match="n_classes"):
        coverage.class_coverage(ref, ref, n_classes=1)
