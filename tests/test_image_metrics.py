"""Image metrics: Fréchet distance against closed forms, Inception score limits, the
classifier's forward passes, training/restore, the Gaussian baseline and input checks.

All on tiny synthetic data (never the real 60k set) so the file runs in seconds.
"""
from __future__ import annotations

import os

import chex
import jax
import numpy as np
import pytest
import scipy.linalg

import dsm_jax.image_metrics as im
from dsm_jax import coverage
from conftest import random_spd, tree_equal


def _rotation(rng, d):
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return q


def _toy_images(rng, n, n_classes=10, noise=0.1):
    """Separable toy problem: class k is a bright 6×6 square at one of 10 positions, plus
    noise, in [0, 1] with the 2-px zero border of padded Fashion-MNIST."""
    labels = rng.integers(0, n_classes, size=n).astype(np.int32)
    x = rng.uniform(0.0, noise, size=(n, 32, 32, 1)).astype(np.float32)
    for i, k in enumerate(labels):
        r, c = 3 + 6 * (k // 4), 3 + 6 * (k % 4)
        x[i, r : r + 6, c : c + 6, 0] = 0.9
    x[:, :2], x[:, -2:], x[:, :, :2], x[:, :, -2:] = 0, 0, 0, 0
    return x, labels


@pytest.fixture(scope="module")
def params():
    return im.init_classifier(jax.random.PRNGKey(0))


# ---------------------------------------------------------------------------------------
# Fréchet distance.
# ---------------------------------------------------------------------------------------
def test_fd_of_identical_statistics_is_zero():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(300, 16)) @ rng.normal(size=(16, 16))
    assert abs(im.fd(feats, feats)) < 1e-6
    mu, cov = rng.normal(size=8), random_spd(rng, 8).astype(np.float64)
    assert abs(im.frechet_distance(mu, cov, mu, cov)) < 1e-6
    # Singular covariances (dead features, like the padding pixels) stay real and ~0.
    low_rank = np.hstack([feats[:, :4], np.zeros((300, 4))])
    assert abs(im.fd(low_rank, low_rank)) < 1e-6


def test_fd_matches_closed_form_for_diagonal_and_commuting_covariances():
    rng = np.random.default_rng(1)
    d = 12
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    a, b = rng.uniform(0.1, 3.0, size=d), rng.uniform(0.1, 3.0, size=d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    np.testing.assert_allclose(im.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)), expected, rtol=1e-10)
    # Commuting full covariances: same eigenvectors, so the same formula on the eigenvalues.
    q = _rotation(rng, d)
    got = im.frechet_distance(mu1, (q * a) @ q.T, mu2, (q * b) @ q.T)
    np.testing.assert_allclose(got, expected, rtol=1e-9)


def test_fd_general_case_matches_sqrtm_reference_and_is_symmetric():
    rng = np.random.default_rng(2)
    d = 10
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    c1, c2 = random_spd(rng, d).astype(np.float64), random_spd(rng, d, 0.2, 5.0).astype(np.float64)
    # Independent reference on well-conditioned matrices: tr sqrtm(C1 C2) (real part).
    ref = np.sum((mu1 - mu2) ** 2) + np.trace(c1 + c2) - 2 * np.trace(scipy.linalg.sqrtm(c1 @ c2).real)
    fd12 = im.frechet_distance(mu1, c1, mu2, c2)
    np.testing.assert_allclose(fd12, ref, rtol=1e-8)
    np.testing.assert_allclose(im.frechet_distance(mu2, c2, mu1, c1), fd12, rtol=1e-10)
    fa, fb = rng.normal(size=(200, d)), 0.5 + 2.0 * rng.normal(size=(150, d))
    np.testing.assert_allclose(im.fd(fa, fb), im.fd(fb, fa), rtol=1e-10)


def test_fd_is_invariant_to_a_rotation_of_both_feature_sets():
    rng = np.random.default_rng(3)
    d = 16
    fa = rng.normal(size=(400, d)) @ rng.normal(size=(d, d))
    fb = 1.0 + rng.normal(size=(300, d)) @ rng.normal(size=(d, d))
    r = _rotation(rng, d)
    np.testing.assert_allclose(im.fd(fa @ r, fb @ r), im.fd(fa, fb), rtol=1e-9)


def test_gaussian_stats_are_float64_mean_and_unbiased_covariance():
    rng = np.random.default_rng(4)
    feats = rng.normal(size=(50, 3)).astype(np.float32)
    mu, cov = im.gaussian_stats(feats)
    assert mu.dtype == np.float64 and cov.dtype == np.float64
    np.testing.assert_allclose(mu, feats.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(cov, np.cov(feats.astype(np.float64).T, ddof=1), rtol=1e-12)


# ---------------------------------------------------------------------------------------
# Inception score.
# ---------------------------------------------------------------------------------------
def test_inception_score_limits():
    # Predictions that ignore the image: p(y|x) = p(y), KL = 0, IS = 1.
    mean, std = im.inception_score(np.zeros((1000, 10)))
    np.testing.assert_allclose([mean, std], [1.0, 0.0], atol=1e-12)
    # Confident and evenly spread over the 10 classes within every split: IS = 10.
    logits = 50.0 * np.eye(10)[np.arange(1000) % 10]
    mean, std = im.inception_score(logits, n_splits=10)
    np.testing.assert_allclose(mean, 10.0, rtol=1e-6)
    assert std < 1e-6
    # Confident but all one class: p(y) is that class too, IS = 1.
    mean, _ = im.inception_score(50.0 * np.eye(10)[np.zeros(100, int)], n_splits=5)
    np.testing.assert_allclose(mean, 1.0, rtol=1e-6)


# ---------------------------------------------------------------------------------------
# Classifier forward passes and training.
# ---------------------------------------------------------------------------------------
def test_classifier_shapes_and_chunked_features_equal_unchunked(params):
    x, _ = _toy_images(np.random.default_rng(5), 23)
    logits = im.classifier_logits(params, x)
    feats = im.classifier_features(params, x)
    chex.assert_shape(logits, (23, 10))
    chex.assert_shape(feats, (23, im.Classifier.hidden))
    assert isinstance(feats, np.ndarray) and np.all(np.isfinite(feats))
    # 23 = 3 chunks of 8, the last one padded: same numbers as one batch of 23.
    np.testing.assert_allclose(im.classifier_features(params, x, batch_size=8), feats, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(im.classifier_logits(params, x, batch_size=8), logits, rtol=1e-5, atol=1e-6)
    # The module's own apply agrees with the chunked path.
    direct = im.Classifier().apply(params, x[:8], method=im.Classifier.features)
    np.testing.assert_allclose(feats[:8], np.asarray(direct), rtol=1e-5, atol=1e-6)


def test_train_classifier_learns_and_restores_from_checkpoint(tmp_path):
    rng = np.random.default_rng(7)
    x, y = _toy_images(rng, 320)
    xt, yt = _toy_images(rng, 200)
    kwargs = dict(seed=3, steps=40, batch_size=32, learning_rate=3e-3, progress=False, steps_per_call=20)
    params, info = im.train_classifier(x, y, test_images=xt, test_labels=yt, checkpoint_dir=str(tmp_path), **kwargs)
    assert info["test_accuracy"] >= 0.95, info
    assert not info["restored"] and info["steps"] == 40 and info["seconds"] > 0
    assert np.isclose(im.accuracy(params, xt, yt), info["test_accuracy"])

    again, info2 = im.train_classifier(x, y, test_images=xt, test_labels=yt, checkpoint_dir=str(tmp_path), **kwargs)
    assert info2["restored"] and info2["final_loss"] is None
    assert tree_equal(params, again)
    assert info2["test_accuracy"] == info["test_accuracy"]
    # Deterministic for a seed: a fresh run elsewhere gives the same parameters.
    fresh, _ = im.train_classifier(x, y, checkpoint_dir=str(tmp_path / "other"), **kwargs)
    assert tree_equal(params, fresh)

    # A checkpoint is never silently reused for other settings.
    with pytest.raises(ValueError, match="other settings"):
        im.train_classifier(x, y, checkpoint_dir=str(tmp_path), **{**kwargs, "seed": 4})


def test_cached_classifier_shares_one_directory_per_setting(tmp_path):
    rng = np.random.default_rng(7)
    x, y = _toy_images(rng, 96)
    xt, yt = _toy_images(rng, 40)
    kwargs = dict(root=str(tmp_path), steps=4, seed=1, progress=False, batch_size=16)
    params, info = im.cached_classifier(x, y, xt, yt, **kwargs)
    assert sorted(os.listdir(tmp_path)) == ["steps4-seed1-n96"] and not info["restored"]
    again, info2 = im.cached_classifier(x, y, xt, yt, **kwargs)  # a second experiment reuses it
    assert info2["restored"] and tree_equal(params, again)
    assert info2["test_accuracy"] == info["test_accuracy"]
    im.cached_classifier(x[:64], y[:64], xt, yt, **kwargs)  # a training subset gets its own
    assert sorted(os.listdir(tmp_path)) == ["steps4-seed1-n64", "steps4-seed1-n96"]


# ---------------------------------------------------------------------------------------
# Gaussian baseline and the report.
# ---------------------------------------------------------------------------------------
def test_gaussian_baseline_matches_the_fitted_moments():
    rng = np.random.default_rng(8)
    w = rng.normal(size=(4, 1024)) * 0.1
    train = (0.5 + rng.normal(size=(300, 4)) @ w + 0.02 * rng.normal(size=(300, 1024))).astype(np.float32)
    train = train.reshape(300, 32, 32, 1)
    flat = train.reshape(300, -1).astype(np.float64)
    mean, cov = flat.mean(0), np.cov(flat, rowvar=False)

    n = 4000
    draws = im.gaussian_baseline_sampler(train)(jax.random.PRNGKey(0), n)  # not clipped
    chex.assert_shape(draws, (n, 32, 32, 1))
    d = draws.reshape(n, -1).astype(np.float64)
    sd = np.sqrt(np.diag(cov))
    assert np.all(np.abs(d.mean(0) - mean) < 5 * sd / np.sqrt(n) + 1e-4)
    # The covariance seen through 16 random projections (the full 1024² one is slow to
    # estimate): Var(pᵀx) has relative standard error sqrt(2/n).
    p = rng.normal(size=(1024, 16))
    want = np.einsum("ik,ij,jk->k", p, cov, p)
    got = np.var(d @ p, axis=0, ddof=1)
    np.testing.assert_allclose(got, want, rtol=5 * np.sqrt(2 / n))
    cross = np.cov((d @ p).T)  # and the cross-covariances of the projections
    ref = p.T @ cov @ p
    assert np.max(np.abs(cross - ref) / np.sqrt(np.outer(want, want))) < 5 / np.sqrt(n)

    sampler = im.gaussian_baseline_sampler(train, clip=True)
    clipped = sampler(jax.random.PRNGKey(0), 100)
    assert clipped.min() >= 0.0 and clipped.max() <= 1.0
    np.testing.assert_array_equal(clipped, sampler(jax.random.PRNGKey(0), 100))


def test_fd_report_floor_and_self_distance(params):
    rng = np.random.default_rng(9)
    train, _ = _toy_images(rng, 120)
    test, _ = _toy_images(rng, 60)
    rep = im.fd_report(params, test, train, test, n=60, key=jax.random.PRNGKey(1), n_splits=1, batch_size=60)
    assert rep["n"] == 60 and rep["n_test"] == 60 and rep["n_train"] == 120
    assert abs(rep["fd"]) < 1e-6  # the test set against itself
    for k in ("fd_floor", "fd_gaussian_baseline", "fd_gaussian_baseline_std", "fd_train"):
        assert np.isfinite(rep[k]) and rep[k] > -1e-9, (k, rep[k])
    assert rep["baseline_draws"] == 5 and rep["fd_gaussian_baseline_std"] > 0  # independent draws differ
    # One split: the test subset is the test set reordered, so the same score.
    np.testing.assert_allclose(rep["inception_score"], rep["inception_score_test"], rtol=1e-6)

    # clip_samples scores images as displayed: out-of-range values are clipped to [0, 1] first.
    shifted = test + 0.5
    clipped = im.fd_report(params, shifted, train, test, n=60, key=jax.random.PRNGKey(1), n_splits=1,
                           batch_size=60, clip_samples=True, baseline_draws=1)
    raw = im.fd_report(params, np.clip(shifted, 0.0, 1.0), train, test, n=60, key=jax.random.PRNGKey(1),
                       n_splits=1, batch_size=60, baseline_draws=1)
    assert clipped["fd"] == raw["fd"] and clipped["fd"] != rep["fd"]
    with pytest.raises(ValueError, match="`baseline_draws`"):
        im.fd_report(params, test, train, test, n=60, key=jax.random.PRNGKey(1), baseline_draws=0)


def test_fd_report_class_coverage_is_the_classifier_split_of_the_samples(params):
    rng = np.random.default_rng(11)
    train, _ = _toy_images(rng, 80)
    test, test_labels = _toy_images(rng, 40)
    rep = im.fd_report(params, test, train, test, n=40, key=jax.random.PRNGKey(1), n_splits=1, batch_size=40,
                       baseline_draws=1, test_labels=test_labels)
    predicted = np.argmax(im.classifier_logits(params, test, batch_size=40), axis=1)
    expected = coverage.class_coverage(predicted, test_labels)
    assert {k: rep[k] for k in expected} == expected
    assert "class_kl" not in im.fd_report(params, test, train, test, n=40, key=jax.random.PRNGKey(1), n_splits=1,
                                          batch_size=40, baseline_draws=1)
    with pytest.raises(ValueError, match="`test_labels`"):
        im.fd_report(params, test, train, test, n=40, key=jax.random.PRNGKey(1), test_labels=test_labels[:-1])


def test_sample_scorer_and_fd_report_score_bit_for_bit_as_their_own_code_did(params):
    # Before make_sample_scorer, experiments.common.sample_scorer and fd_report each had this
    # code (copied here from commit 21256bd): the shared scorer must give the same bits.
    from experiments import common

    rng = np.random.default_rng(13)
    train, _ = _toy_images(rng, 80)
    test, test_labels = _toy_images(rng, 40)
    samples = rng.normal(0.5, 0.6, (40, 32, 32, 1)).astype(np.float32)  # out of [0, 1]: clipping matters
    # (40 images everywhere: one compiled batch shape, the one the coverage test above uses)

    x = np.clip(samples, 0.0, 1.0)  # the old sample_scorer
    test_stats = im.gaussian_stats(im.classifier_features(params, test))
    classes = coverage.class_coverage(np.argmax(im.classifier_logits(params, x), 1), test_labels)
    old_scorer = {"fd": im.frechet_distance(*im.gaussian_stats(im.classifier_features(params, x)), *test_stats),
                  **{k: classes[k] for k in common.MONITOR_FIELDS[1:]}}
    assert common.sample_scorer(params, test, test_labels)(samples) == old_scorer

    # the old fd_report's fd and class coverage (features and logits in one chunked pass), unclipped
    test_f, _ = im.classifier._forward_chunked(params, test, 40)
    sample_f, sample_logits = im.classifier._forward_chunked(params, samples, 40)
    old_report = {**coverage.class_coverage(np.argmax(sample_logits, axis=1), test_labels, n_classes=10),
                  "fd": im.frechet_distance(*im.gaussian_stats(sample_f), *im.gaussian_stats(test_f))}
    rep = im.fd_report(params, samples, train, test, n=40, key=jax.random.PRNGKey(1), n_splits=1, batch_size=40,
                       baseline_draws=1, test_labels=test_labels)
    assert {k: rep[k] for k in old_report} == old_report
    assert list(rep)[:6] == [*old_report][:-1] + ["n"]  # metrics.json keeps its key order
    assert im.make_sample_scorer(params, test, test_labels, batch_size=40)(samples, clip=False) == old_report


def test_make_sample_scorer_without_labels_and_on_nonfinite_samples(params):
    test, _ = _toy_images(np.random.default_rng(14), 40)
    score = im.make_sample_scorer(params, test)
    assert set(score(test)) == {"fd"} and abs(score(test)["fd"]) < 1e-6  # the test set against itself
    bad = test.copy()
    bad[0, 0, 0, 0] = np.inf
    assert score(bad) is None  # a monitor records the failure instead of stopping


# ---------------------------------------------------------------------------------------
# Input validation.
# ---------------------------------------------------------------------------------------
def test_bad_inputs_raise_with_the_argument_name(params):
    good, labels = _toy_images(np.random.default_rng(10), 20)
    with pytest.raises(ValueError, match=r"`images`.*\[\.\.\., None\]"):
        im.classifier_features(params, good[..., 0])
    with pytest.raises(ValueError, match="`images`.*32, 32, 1"):
        im.classifier_logits(params, np.zeros((4, 28, 28, 1), np.float32))
    nan = good.copy()
    nan[3, 5, 5, 0] = np.nan
    with pytest.raises(ValueError, match="`sample_images` has 1 image"):
        im.fd_report(params, nan, good, good, n=10, key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="`n` = 30 is larger than the 20 sample images"):
        im.fd_report(params, good, good, good, n=30, key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="`labels`"):
        im.accuracy(params, good, labels[:-1])
    with pytest.raises(ValueError, match="0..9"):
        im.train_classifier(good, labels + 10, steps=1, progress=False)
    with pytest.raises(ValueError, match="`batch_size` = 128 exceeds"):
        im.train_classifier(good, labels, steps=1, progress=False)
    with pytest.raises(ValueError, match="`cov2` must have shape"):
        im.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(4))
    with pytest.raises(ValueError, match="`features`"):
        im.gaussian_stats(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="`n_splits` = 6 is larger than the 5 rows"):
        im.inception_score(np.zeros((5, 10)), n_splits=6)
    with pytest.raises(ValueError, match="`test_labels`"):
        im.train_classifier(good, labels, steps=1, batch_size=4, progress=False,
                            test_images=good, test_labels=labels[:5])


# Bad inputs, each refused before any forward pass with an error naming the argument: the
# report's arguments are all checked before its minute of feature extraction.
_GOOD, _LABELS = _toy_images(np.random.default_rng(12), 12)
_NAN = _GOOD.copy()
_NAN[0, 0, 0, 0] = np.nan


def _report(**overrides):
    kwargs = dict(sample_images=_GOOD, train_images=_GOOD, test_images=_GOOD, n=6, key=jax.random.key(0),
                  n_splits=2, batch_size=6, baseline_draws=1)
    return lambda params: im.fd_report(params, **{**kwargs, **overrides})


BAD_CALLS = [
    ("report-nan-samples", _report(sample_images=_NAN), ValueError, r"`sample_images` has 1 images with NaN/inf"),
    ("report-nan-train", _report(train_images=_NAN), ValueError, r"`train_images` has 1 images with NaN/inf"),
    ("report-uint8-samples", _report(sample_images=(_GOOD * 255).astype(np.uint8)), TypeError,
     r"`sample_images` must be a floating-point array, got dtype uint8"),
    ("report-n-0", _report(n=0), ValueError, r"`n` must be an int >= 1, got 0"),
    ("report-n-float", _report(n=6.0), TypeError, r"`n` must be an int >= 1, got 6.0"),
    ("report-n-splits-too-many", _report(n_splits=7), ValueError, r"`n_splits` = 7 is larger than the 6"),
    ("report-n-splits-0", _report(n_splits=0), ValueError, r"`n_splits` must be an int >= 1"),
    ("report-batch-size-0", _report(batch_size=0), ValueError, r"`batch_size` must be an int >= 1"),
    ("report-no-key", _report(key=None), TypeError, r"`key` must be one PRNG key and is required"),
    ("report-int-key", _report(key=3), TypeError, r"`key` must be one PRNG key"),
    ("report-clip-str", _report(clip_samples="no"), TypeError, r"`clip_samples` must be True or False"),
    ("report-test-labels-float", _report(test_labels=_LABELS.astype(np.float32)), TypeError,
     r"`test_labels` must be integer class labels of shape \(12,\), got dtype float32"),
    ("report-test-labels-short", _report(test_labels=_LABELS[:5]), ValueError,
     r"`test_labels` must be integers of shape \(12,\)"),
    ("report-empty-test", _report(test_images=_GOOD[:0]), ValueError, r"`test_images` is empty"),
    ("scorer-test-labels-short", lambda p: im.make_sample_scorer(p, _GOOD, _LABELS[:5]), ValueError,
     r"`test_labels` must be integers of shape \(12,\)"),
    ("scorer-batch-size-0", lambda p: im.make_sample_scorer(p, _GOOD, batch_size=0), ValueError,
     r"`batch_size` must be an int >= 1"),
    ("logits-wrong-shape", lambda p: im.classifier_logits(p, np.zeros((2, 32, 32, 3), np.float32)), ValueError,
     r"`images` must be images of shape \(32, 32, 1\), got \(32, 32, 3\)"),
    ("features-batch-size-0", lambda p: im.classifier_features(p, _GOOD, batch_size=0), ValueError,
     r"`batch_size` must be an int >= 1"),
    ("accuracy-labels-out-of-range", lambda p: im.accuracy(p, _GOOD, _LABELS - 1 - _LABELS.max()), ValueError,
     r"`labels` must lie in 0..9"),
    ("train-steps-0", lambda p: im.train_classifier(_GOOD, _LABELS, steps=0, progress=False), ValueError,
     r"`steps` must be an int >= 1"),
    ("train-lr-nan", lambda p: im.train_classifier(_GOOD, _LABELS, learning_rate=float("nan"), batch_size=4,
                                                   progress=False), ValueError, r"`learning_rate` must be finite"),
    ("train-lr-0", lambda p: im.train_classifier(_GOOD, _LABELS, learning_rate=0.0, batch_size=4, progress=False),
     ValueError, r"`learning_rate` must be finite and > 0"),
    ("train-seed-float", lambda p: im.train_classifier(_GOOD, _LABELS, seed=0.5, batch_size=4, progress=False),
     TypeError, r"`seed` must be an int >= 0"),
    ("train-steps-per-call-0", lambda p: im.train_classifier(_GOOD, _LABELS, steps_per_call=0, batch_size=4,
                                                             progress=False), ValueError, r"`steps_per_call`"),
    ("train-test-images-only", lambda p: im.train_classifier(_GOOD, _LABELS, test_images=_GOOD, batch_size=4,
                                                             progress=False), ValueError, r"`test_labels`"),
    ("baseline-jitter-nan", lambda p: im.gaussian_baseline_sampler(_GOOD, jitter=float("nan")), ValueError,
     r"`jitter` must be finite and >= 0"),
    ("baseline-clip-str", lambda p: im.gaussian_baseline_sampler(_GOOD, clip="yes"), TypeError, r"`clip`"),
    ("baseline-n-0", lambda p: im.gaussian_baseline_sampler(_GOOD)(jax.random.key(0), 0), ValueError,
     r"`n` must be an int >= 1"),
    ("fd-width-mismatch", lambda p: im.fd(np.zeros((4, 3)), np.zeros((4, 2))), ValueError,
     r"`features_a` and `features_b` must have the same width"),
    ("fd-1d-features", lambda p: im.fd(np.zeros(4), np.zeros(4)), ValueError, r"`features` must have shape \(n, d\)"),
    ("fd-nan-features", lambda p: im.fd(np.full((4, 2), np.nan), np.zeros((4, 2))), ValueError,
     r"`features` has NaN/inf"),
    ("frechet-nan-mean", lambda p: im.frechet_distance(np.full(2, np.nan), np.eye(2), np.zeros(2), np.eye(2)),
     ValueError, r"`mu1` has NaN/inf"),
    ("inception-nan-logits", lambda p: im.inception_score(np.full((4, 10), np.nan), n_splits=1), ValueError,
     r"`logits` has NaN/inf"),
    ("inception-str-logits", lambda p: im.inception_score(np.array([["a"] * 10] * 4), n_splits=1), TypeError,
     r"`logits` must be numbers"),
]


@pytest.mark.parametrize("call, error, message", [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS])
def test_bad_input_is_refused_before_compute(params, call, error, message, monkeypatch):
    # Any forward pass of the classifier would mean the check came after compute started.
    import dsm_jax.image_metrics.classifier as classifier_module

    def no_forward(*args, **kwargs):
        raise AssertionError("a forward pass ran before the bad input was refused")

    monkeypatch.setattr(classifier_module, "_forward", no_forward)
    with pytest.raises(error, match=message):
        call(params)


def test_gaussian_baseline_of_fewer_images_than_pixels_has_the_full_factorisation_law():
    # n <= d pixels takes the thin-SVD path, n > d the eigh path: both must draw from
    # N(mean, cov + jitter I) of the images (checked on 20,000 draws of 2x2 images).
    rng = np.random.default_rng(9)
    n = 20000
    for imgs in (rng.uniform(size=(6, 2, 2, 1)).astype(np.float32), rng.uniform(size=(3, 2, 2, 1)).astype(np.float32)):
        d = im.gaussian_baseline_sampler(imgs, jitter=1e-3)(jax.random.PRNGKey(1), n).reshape(n, -1)
        flat = imgs.reshape(len(imgs), -1).astype(np.float64)
        want = np.cov(flat, rowvar=False) + 1e-3 * np.eye(4)
        np.testing.assert_allclose(d.mean(0), flat.mean(0), atol=5 * np.sqrt(want.diagonal().max() / n))
        np.testing.assert_allclose(np.cov(d.astype(np.float64), rowvar=False), want, atol=6 * want.max() / np.sqrt(n))
