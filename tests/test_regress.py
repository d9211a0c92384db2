"""Tests for sensitivity.regress: the linear map from sensitivity maps to boxes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import Ridge

from sensitivity.boxes import corloc
from sensitivity.regress import NORMALIZATIONS, TARGETS, BoxRegressor, map_features


def random_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    """Valid random boxes (n, 4) in [0, 1]."""
    xs, ys = np.sort(rng.random((n, 2)), axis=1), np.sort(rng.random((n, 2)), axis=1)
    return np.column_stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]])


def linear_boxes(S: np.ndarray, target: str, rng: np.random.Generator) -> np.ndarray:
    """Corner boxes whose ``target`` parameterisation is an exact linear function of features S in [0, 1]."""
    A = rng.uniform(-1, 1, size=(S.shape[1], 4)) / S.shape[1]
    params = 0.2 * (S - 0.5) @ A  # each column in [-0.1, 0.1]
    if target == "corners":
        return params + [0.25, 0.25, 0.75, 0.75]
    cx, cy, w, h = (params + [0.5, 0.5, 0.4, 0.4]).T
    if target == "centre_logsize":
        w, h = np.exp(np.log(0.4) + 2 * params[:, 2]), np.exp(np.log(0.4) + 2 * params[:, 3])
    return np.column_stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


@pytest.fixture
def problem() -> tuple[np.ndarray, np.ndarray]:
    """A well-conditioned problem: 500 random 6x6 maps and random boxes."""
    rng = np.random.default_rng(0)
    return rng.normal(size=(500, 6, 6)), random_boxes(rng, 500)


def test_ridge_alpha0_equals_lstsq(problem):
    X, y = problem
    model = BoxRegressor(alpha=0.0, pool=None).fit(X, y)
    design = np.column_stack([X.reshape(len(X), -1), np.ones(len(X))])
    sol = np.linalg.lstsq(design, y, rcond=None)[0]
    np.testing.assert_allclose(model.coef_, sol[:-1].T, rtol=0, atol=1e-8)
    np.testing.assert_allclose(model.intercept_, sol[-1], rtol=0, atol=1e-8)
    assert model.coef_.shape == (4, 36) and model.n_features_in_ == 36
    assert model.map_shape_ == (6, 6) and model.n_samples_seen_ == 500


def test_ridge_equals_sklearn_ridge(problem):
    X, y = problem
    model = BoxRegressor(alpha=3.0, pool=None).fit(X, y)
    ref = Ridge(alpha=3.0).fit(X.reshape(len(X), -1), y)
    np.testing.assert_allclose(model.coef_, ref.coef_, rtol=0, atol=1e-8)
    np.testing.assert_allclose(model.intercept_, ref.intercept_, rtol=0, atol=1e-8)


def test_ridge_accurate_for_offset_features():
    """Features with a large common offset (mean >> spread) must not lose the fit to cancellation."""
    rng = np.random.default_rng(1)
    S = rng.random((400, 9))
    y = linear_boxes(S, "corners", rng)
    shifted = BoxRegressor(alpha=0.0, pool=None).fit(S + 1e4, y)
    np.testing.assert_allclose(shifted.predict(S + 1e4), y, rtol=0, atol=1e-8)


def test_ridge_singular_falls_back_to_least_squares():
    """Duplicated and constant cells (e.g. empty map borders) make alpha=0 singular: still the lstsq fit."""
    rng = np.random.default_rng(11)
    S = rng.random((200, 5))
    X = np.column_stack([S, S[:, :2], np.zeros(200)])
    y = linear_boxes(S, "corners", rng)
    model = BoxRegressor(alpha=0.0, pool=None).fit(X, y)
    assert np.all(np.isfinite(model.coef_))
    np.testing.assert_allclose(model.predict(X), y, rtol=0, atol=1e-8)


def test_fit_batches_uneven_equals_one_shot(problem):
    X, y = problem
    one_shot = BoxRegressor(alpha=0.5, pool=None).fit(X, y)
    edges = [0, 7, 107, 500]
    streamed = BoxRegressor(alpha=0.5, pool=None).fit_batches(
        (X[a:b], y[a:b]) for a, b in zip(edges[:-1], edges[1:])
    )
    np.testing.assert_allclose(streamed.coef_, one_shot.coef_, rtol=0, atol=1e-10)
    np.testing.assert_allclose(streamed.intercept_, one_shot.intercept_, rtol=0, atol=1e-10)
    assert streamed.n_samples_seen_ == 500


def test_fit_independent_of_batch_size(problem):
    X, y = problem
    small = BoxRegressor(pool=None, batch_size=64).fit(X, y)
    large = BoxRegressor(pool=None, batch_size=10_000).fit(X, y)
    np.testing.assert_allclose(small.coef_, large.coef_, rtol=0, atol=1e-10)
    np.testing.assert_allclose(small.intercept_, large.intercept_, rtol=0, atol=1e-10)


def test_pool_equals_manual_block_mean():
    rng = np.random.default_rng(2)
    X, y = rng.random((300, 12, 12)), random_boxes(rng, 300)
    pooled = BoxRegressor(pool=6).fit(X, y)
    manual = BoxRegressor(pool=None).fit(X.reshape(300, 6, 2, 6, 2).mean(axis=(2, 4)), y)
    np.testing.assert_allclose(pooled.coef_, manual.coef_, rtol=0, atol=1e-8)
    np.testing.assert_allclose(pooled.intercept_, manual.intercept_, rtol=0, atol=1e-8)
    assert pooled.n_features_in_ == 36 and pooled.map_shape_ == (12, 12)


def test_sgd_converges_to_closed_form():
    """SGD on noise-free linear targets must match the exact (alpha=0) predictions within 1e-6.

    The targets are an exact linear function of 16 independent features, so every
    minibatch gradient vanishes at the optimum and SGD converges linearly (the
    internally standardised problem has Hessian eigenvalues ~0.5, so each step
    shrinks the error by ~5% at lr=0.1). After 1,500 steps the observed gap is
    ~1.5e-8, float32 round-off; 1e-6 leaves margin for other BLAS/devices while a
    wrong fold-back of the standardisation (or an unconverged fit) fails it.
    """
    rng = np.random.default_rng(3)
    S = rng.random((4000, 4, 4))
    y = linear_boxes(S.reshape(4000, -1), "corners", rng)
    exact = BoxRegressor(alpha=0.0, pool=None).fit(S, y)
    sgd = BoxRegressor(solver="sgd", pool=None, batch_size=256, max_iter=1500, lr_step=1000).fit(S, y)
    assert np.abs(sgd.predict(S) - exact.predict(S)).max() < 1e-6
    again = BoxRegressor(solver="sgd", pool=None, batch_size=256, max_iter=1500, lr_step=1000).fit_batches(
        [(S[:1000], y[:1000]), (S[1000:], y[1000:])]
    )
    np.testing.assert_array_equal(again.coef_, sgd.coef_)  # seeded: same draws, same weights


def test_sgd_learning_rate_decays():
    """With lr divided by 10 every 2 steps, 300 steps barely move; without decay they converge."""
    rng = np.random.default_rng(3)
    S = rng.random((500, 16))
    y = linear_boxes(S, "corners", rng)
    decayed = BoxRegressor(solver="sgd", pool=None, batch_size=64, max_iter=300, lr_step=2).fit(S, y)
    constant = BoxRegressor(solver="sgd", pool=None, batch_size=64, max_iter=300, lr_step=300).fit(S, y)
    assert np.abs(decayed.predict(S) - y).max() > 1e-2
    assert np.abs(constant.predict(S) - y).max() < 1e-3


def test_sgd_stable_on_correlated_maps():
    """Near-identical map cells (correlation eigenvalue ~64) must not make lr=0.1 diverge."""
    rng = np.random.default_rng(10)
    S = rng.random((1000, 1)) + 0.05 * rng.random((1000, 64))
    y = linear_boxes(S, "corners", rng)
    sgd = BoxRegressor(solver="sgd", pool=None, batch_size=128, max_iter=300).fit(S, y)
    assert np.all(np.isfinite(sgd.coef_))
    assert np.mean((sgd.predict(S) - y) ** 2) < 0.1 * np.mean((y - y.mean(axis=0)) ** 2)


def test_normalize_definitions():
    maps = np.array([[[0.0, 1.0], [2.0, 1.0]]])
    expected = {
        "none": [0, 1, 2, 1],
        "max": [0, 0.5, 1, 0.5],
        "sum": [0, 0.25, 0.5, 0.25],
        "rank": np.array([1, 2.5, 4, 2.5]) / 4,
        "log": np.log1p([0, 1, 2, 1]),
    }
    assert set(expected) == set(NORMALIZATIONS)
    for name, values in expected.items():
        np.testing.assert_allclose(map_features(maps, None, name)[0], values, err_msg=name)


@pytest.mark.parametrize("normalize", ["max", "sum", "rank", "log"])
def test_normalize_is_per_image_and_scale_free(normalize):
    rng = np.random.default_rng(4)
    maps = rng.random((3, 8, 8))
    scaled = maps.copy()
    scaled[1] *= 10
    base, changed = map_features(maps, 4, normalize), map_features(scaled, 4, normalize)
    np.testing.assert_allclose(changed, base, rtol=1e-12, atol=1e-12)
    assert not np.allclose(map_features(scaled, 4, "none"), map_features(maps, 4, "none"))


@pytest.mark.parametrize("normalize", NORMALIZATIONS)
def test_all_zero_map_gives_finite_output(normalize):
    rng = np.random.default_rng(5)
    X, y = rng.random((50, 8, 8)), random_boxes(rng, 50)
    X[0] = 0.0
    feats = map_features(X, 4, normalize)
    assert np.all(np.isfinite(feats))
    assert np.array_equal(map_features(X[:1], 4, normalize), feats[:1])  # deterministic, per image
    model = BoxRegressor(pool=4, normalize=normalize).fit(X, y)
    assert np.all(np.isfinite(model.predict(np.zeros((2, 8, 8)))))


@pytest.mark.parametrize("target", TARGETS)
def test_target_parameterisation_round_trip(target):
    rng = np.random.default_rng(6)
    S = rng.random((300, 16))
    y = linear_boxes(S, target, rng)
    model = BoxRegressor(alpha=0.0, pool=None, target=target).fit(S, y)
    np.testing.assert_allclose(model.predict(S), y, rtol=0, atol=1e-8)
    if target == "centre_logsize":  # not linear in corners, so the parameterisation is really used
        corners = BoxRegressor(alpha=0.0, pool=None).fit(S, y)
        assert np.abs(corners.predict(S) - y).max() > 1e-5


def test_predictions_are_valid_boxes(problem):
    X, y = problem
    model = BoxRegressor(alpha=0.0, pool=None).fit(X, y)
    far = 5 * X
    raw = far.reshape(len(far), -1) @ model.coef_.T + model.intercept_
    assert (raw < 0).any() and (raw > 1).any() and (raw[:, 0] > raw[:, 2]).any()  # extrapolation is wild
    pred = model.predict(far)
    assert pred.shape == (500, 4) and pred.dtype == np.float64
    assert np.all((pred >= 0) & (pred <= 1))
    assert np.all(pred[:, 0] <= pred[:, 2]) and np.all(pred[:, 1] <= pred[:, 3])
    clipped = np.clip(raw, 0, 1)
    np.testing.assert_array_equal(pred[:, ::2], np.sort(clipped[:, ::2], axis=1))
    np.testing.assert_array_equal(pred[:, 1::2], np.sort(clipped[:, 1::2], axis=1))


def test_array_types_agree():
    rng = np.random.default_rng(7)
    X, y = rng.random((200, 8, 8)).astype(np.float32), random_boxes(rng, 200)
    ref = BoxRegressor(pool=4).fit(X, y)
    from_torch = BoxRegressor(pool=4).fit(torch.from_numpy(X), y)
    np.testing.assert_array_equal(from_torch.coef_, ref.coef_)
    np.testing.assert_array_equal(ref.predict(torch.from_numpy(X)), ref.predict(X))
    half = X.astype(np.float16)
    np.testing.assert_array_equal(
        BoxRegressor(pool=4).fit(half, y).coef_, BoxRegressor(pool=4).fit(half.astype(np.float32), y).coef_
    )
    flat = BoxRegressor(pool=4).fit(map_features(X, 4), y)  # already-pooled flat features
    np.testing.assert_allclose(flat.coef_, ref.coef_, rtol=0, atol=1e-10)
    assert flat.map_shape_ is None


def test_score_is_corloc(problem):
    X, y = problem
    model = BoxRegressor(pool=3).fit(X, y)
    pred = model.predict(X)
    assert model.score(X, y) == corloc(pred, [row[None] for row in y])
    assert 0 < model.score(X, y) < 1
    rng = np.random.default_rng(9)
    S = rng.random((100, 16))
    exact_boxes = linear_boxes(S, "corners", rng)
    assert BoxRegressor(alpha=0.0, pool=None).fit(S, exact_boxes).score(S, exact_boxes) == 1.0


def test_predict_before_fit_raises():
    with pytest.raises(NotFittedError):
        BoxRegressor().predict(np.zeros((1, 28, 28)))


def test_save_load_round_trip(tmp_path, problem):
    X, y = problem
    model = BoxRegressor(pool=3, normalize="rank", target="centre_logsize", alpha=0.1).fit(X, y)
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = BoxRegressor.load(path)
    assert loaded.get_params() == model.get_params()
    assert loaded.map_shape_ == (6, 6) and loaded.n_samples_seen_ == 500
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    flat = BoxRegressor(pool=None).fit(X.reshape(500, -1), y)
    flat.save(tmp_path / "flat.npz")
    assert BoxRegressor.load(tmp_path / "flat.npz").map_shape_ is None


def test_load_rejects_other_files(tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a model")
    other = tmp_path / "other.npz"
    np.savez(other, weights=np.ones(3))
    array = tmp_path / "array.npy"
    np.save(array, np.ones(3))
    photo = tmp_path / "photo.jpg"  # numpy alone would say it holds "pickled (object) data ... allow_pickle"
    Image.new("RGB", (8, 8)).save(photo)
    about = "a box model is the .npz that the workflow's fit stage writes (results/<dataset>/regressor.npz)"
    for path, reason in [(junk, "not an .npz archive"), (photo, "not an .npz archive"), (array, "not an .npz archive"),
                         (other, "an .npz without format_version, params, coef, intercept, map_shape, n_samples_seen")]:
        with pytest.raises(ValueError) as info:
            BoxRegressor.load(path)
        assert str(info.value).startswith(f"{path}: not a box model ({reason}); {about}")
        assert "\n" not in str(info.value) and "pickle" not in str(info.value)
    with pytest.raises(FileNotFoundError, match=r"missing.npz: no such file; a box model is"):
        BoxRegressor.load(tmp_path / "missing.npz")
    with pytest.raises(FileNotFoundError, match=r": is a folder; a box model is"):
        BoxRegressor.load(tmp_path)


def test_clone_and_params():
    model = BoxRegressor(solver="sgd", alpha=2.0, pool=7, normalize="log", target="centre_size", lr=0.05)
    copy = clone(model)
    assert copy is not model and copy.get_params() == model.get_params()
    assert BoxRegressor(**model.get_params()).get_params() == model.get_params()
    assert copy.set_params(pool=14).pool == 14
    rng = np.random.default_rng(8)
    fitted = BoxRegressor(pool=2).fit(rng.random((20, 4, 4)), random_boxes(rng, 20))
    assert not hasattr(clone(fitted), "coef_")


def test_refuses_huge_normal_matrix():
    with pytest.raises(ValueError, match=r"25600 features.*smaller pool or solver='sgd'"):
        BoxRegressor(pool=None).fit(np.zeros((2, 160, 160), dtype=np.float32), np.full((2, 4), 0.5))


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"solver": "lbfgs"}, "solver"),
        ({"normalize": "zscore"}, "normalize"),
        ({"target": "xywh"}, "target"),
        ({"pool": 0}, "pool"),
        ({"alpha": -1.0}, "alpha"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_invalid_params_raise(params, match):
    with pytest.raises(ValueError, match=match):
        BoxRegressor(**params).fit(np.ones((4, 4, 4)), np.full((4, 4), 0.5))


def test_invalid_inputs_raise(problem):
    X, y = problem
    with pytest.raises(ValueError, match="shape"):
        BoxRegressor(pool=3).fit(X, y[:10])
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        BoxRegressor(pool=3).fit(X, y * 100)  # pixel boxes
    with pytest.raises(ValueError, match="x1 <= x2"):
        BoxRegressor(pool=3).fit(X, y[:, [2, 1, 0, 3]])
    with pytest.raises(ValueError, match="same shape|shape \\(6, 6\\)"):
        BoxRegressor(pool=3).fit_batches([(X[:10], y[:10]), (np.ones((10, 9, 9)), y[:10])])
    model = BoxRegressor(pool=3).fit(X, y)
    with pytest.raises(ValueError, match="fitted on"):
        model.predict(np.ones((2, 9, 9)))


def test_fit_alpha_path_equals_separate_fits() -> None:
    """One pass over the data gives, for every alpha, exactly the separately fitted model."""
    rng = np.random.default_rng(7)
    X = rng.random((300, 8, 8))
    xs, ys = np.sort(rng.random((300, 2)), axis=1), np.sort(rng.random((300, 2)), axis=1)
    y = np.column_stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]])
    batches = [(X[i : i + 70], y[i : i + 70]) for i in range(0, 300, 70)]
    path = BoxRegressor(pool=4, normalize="max").fit_alpha_path(batches, [0.0, 0.5, 10.0])
    for model, alpha in zip(path, [0.0, 0.5, 10.0]):
        single = BoxRegressor(pool=4, normalize="max", alpha=alpha).fit(X, y)
        assert model.alpha == alpha and model.n_samples_seen_ == 300 and model.map_shape_ == (8, 8)
        np.testing.assert_allclose(model.coef_, single.coef_, rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(model.intercept_, single.intercept_, rtol=1e-9, atol=1e-10)
    with pytest.raises(ValueError, match="ridge"):
        BoxRegressor(solver="sgd").fit_alpha_path(batches, [1.0])


# --- standardised ridge and shape features -------------------------------------------------------------


def test_standardised_normal_equations_equal_standard_scaler_then_ridge() -> None:
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    from sensitivity.regress import NormalEquations

    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 6)) * np.array([1e-3, 1.0, 50.0, 2.0, 1.0, 0.0]) + np.array([0, 5, -3, 0, 1, 7.0])
    Y = X[:, :4] @ rng.normal(size=(4, 4)) + rng.normal(size=(300, 4)) * 0.1
    equations = NormalEquations()
    for start in range(0, 300, 64):  # streamed in uneven batches
        equations.add(X[start:start + 64], Y[start:start + 64])
    for alpha in (0.01, 1.0, 300.0):
        coef, intercept = equations.solve(alpha, standardize=True)
        scaler = StandardScaler().fit(X)  # the constant column gets scale 1, as in NormalEquations
        reference = Ridge(alpha=alpha).fit(scaler.transform(X), Y)
        np.testing.assert_allclose(X @ coef.T + intercept, reference.predict(scaler.transform(X)), atol=1e-8)
    assert not np.allclose(equations.solve(300.0)[0], equations.solve(300.0, standardize=True)[0])


def test_principal_components_of_trailing_features_equal_pca_then_standardised_ridge() -> None:
    from sklearn.decomposition import PCA
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    from sensitivity.regress import NormalEquations

    rng = np.random.default_rng(5)
    shape = rng.normal(size=(400, 3)) * np.array([0.1, 1.0, 20.0])
    embedding = rng.normal(size=(400, 4)) @ rng.normal(size=(4, 12)) + rng.normal(size=(400, 12)) * 0.05 + 3.0
    X = np.hstack([shape, embedding])
    Y = X @ rng.normal(size=(15, 4)) * 0.1 + rng.normal(size=(400, 4)) * 0.1
    equations = NormalEquations()
    for start in range(0, 400, 90):
        equations.add(X[start:start + 90], Y[start:start + 90])
    for k, alpha in ((2, 0.5), (4, 30.0), (7, 300.0)):
        coef, intercept = equations.solve(alpha, standardize=True, components=(3, k))
        reduced = np.hstack([shape, PCA(k).fit(embedding).transform(embedding)])
        scaler = StandardScaler().fit(reduced)
        reference = Ridge(alpha=alpha).fit(scaler.transform(reduced), Y).predict(scaler.transform(reduced))
        np.testing.assert_allclose(X @ coef.T + intercept, reference, atol=1e-7)
    assert coef.shape == (4, 15)
    with pytest.raises(ValueError, match="components"):
        equations.solve(1.0, components=(3, 13))


def test_ridge_towards_prior_weights_equals_standardised_ridge_on_the_prior_residual() -> None:
    """Shrinking towards W0 is ridge on Y - X W0' (then + W0): checked against scikit-learn."""
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    from sensitivity.regress import NormalEquations

    rng = np.random.default_rng(8)
    X = rng.normal(size=(200, 7)) * np.array([0.01, 1.0, 30.0, 2.0, 1.0, 5.0, 0.5]) + 4.0
    Y = X @ rng.normal(size=(7, 4)) * 0.1 + rng.normal(size=(200, 4)) * 0.2
    prior = rng.normal(size=(4, 7)) * 0.05
    equations = NormalEquations()
    for start in range(0, 200, 45):
        equations.add(X[start:start + 45], Y[start:start + 45])
    scaler = StandardScaler().fit(X)
    for alpha in (0.1, 10.0, 1000.0):
        coef, intercept = equations.solve(alpha, standardize=True, towards=prior)
        residual = Ridge(alpha=alpha).fit(scaler.transform(X), Y - X @ prior.T)
        expected = X @ prior.T + residual.predict(scaler.transform(X))
        np.testing.assert_allclose(X @ coef.T + intercept, expected, atol=1e-8)
    # a huge penalty keeps the prior's weights and refits only the intercept to the new data's means
    coef, intercept = equations.solve(1e12, standardize=True, towards=prior)
    np.testing.assert_allclose(coef, prior, atol=1e-8)
    np.testing.assert_allclose(intercept, Y.mean(axis=0) - X.mean(axis=0) @ prior.T, atol=1e-8)
    # no penalty: least squares, whatever the prior
    np.testing.assert_allclose(equations.solve(0.0, towards=prior)[0], equations.solve(0.0)[0], atol=1e-8)
    with pytest.raises(ValueError, match="shape"):
        equations.solve(1.0, towards=prior[:, :3])
    with pytest.raises(ValueError, match="cannot be combined"):
        equations.solve(1.0, components=(3, 2), towards=prior)


def test_fine_tuning_a_fitted_box_model_shrinks_towards_its_weights() -> None:
    from sensitivity.regress import MapStack

    rng = np.random.default_rng(9)
    boxes = np.sort(rng.uniform(0, 1, (90, 2, 2)), axis=1).transpose(0, 2, 1).reshape(90, 4)[:, [0, 2, 1, 3]]
    X = MapStack(rng.uniform(size=(90, 2, 12, 12)), boxes @ rng.normal(size=(4, 10)) + rng.normal(size=(90, 10)) * 0.05)
    prior = BoxRegressor(features="shape", alpha=5.0, embedding_components=3).fit(X[:60], boxes[:60])
    base = BoxRegressor(**prior.get_params())
    loose, tight = base.fit_alpha_path(zip([X[60:]], [boxes[60:]]), [1e-3, 1e9], towards=prior)
    assert tight.alpha == 1e9 and np.allclose(tight.coef_, prior.coef_, atol=1e-6)
    assert not np.allclose(loose.coef_, prior.coef_, atol=1e-3)
    assert loose.n_samples_seen_ == 30 and loose.n_embedding_ == 10
    folds = np.arange(30) % 3
    per_fold = base.fit_alpha_path_folds(zip([X[60:]], [boxes[60:]], [folds]), [1.0], 3, towards=prior)
    for k, (model,) in enumerate(per_fold):  # each fold's model is the fine-tuning on the other folds' rows
        kept = np.flatnonzero(folds != k) + 60
        direct = base.fit_alpha_path(zip([X[kept]], [boxes[kept]]), [1.0], towards=prior)[0]
        np.testing.assert_allclose(model.coef_, direct.coef_, atol=1e-9)
    with pytest.raises(ValueError, match="other features"):
        BoxRegressor(features="shape", alpha=1.0).fit_alpha_path(zip([X[60:]], [boxes[60:]]), [1.0], towards=prior)


def test_shape_features_use_every_channel_and_round_trip(tmp_path) -> None:
    from sensitivity.shape import N_DESCRIPTORS

    rng = np.random.default_rng(0)
    boxes = np.sort(rng.uniform(0, 1, (80, 2, 2)), axis=1).transpose(0, 2, 1).reshape(80, 4)[:, [0, 2, 1, 3]]
    stacks = np.zeros((80, 2, 16, 16))
    for k, (x1, y1, x2, y2) in enumerate(boxes):  # a bright block where the box is, noise elsewhere
        stacks[k, :, int(y1 * 16):max(int(y2 * 16), int(y1 * 16) + 1), int(x1 * 16):max(int(x2 * 16), int(x1 * 16) + 1)] = 1
    stacks += rng.uniform(0, 0.05, stacks.shape)
    model = BoxRegressor(features="shape", alpha=1.0).fit(stacks, boxes)
    assert model.n_features_in_ == 2 * N_DESCRIPTORS and model.n_channels_ == 2 and model.map_shape_ == (16, 16)
    assert model.score(stacks, boxes) >= 0.85  # training CorLoc on blocks of a 16-pixel grid
    with pytest.raises(ValueError, match="features"):
        model.predict(stacks[:, 0])  # one channel gives half the descriptors
    model.save(tmp_path / "shape.npz")
    loaded = BoxRegressor.load(tmp_path / "shape.npz")
    assert loaded.features == "shape" and loaded.n_channels_ == 2
    np.testing.assert_array_equal(loaded.predict(stacks), model.predict(stacks))
    # "pooled" on a stack uses its first channel, exactly as on the plain maps
    pooled = BoxRegressor(pool=4).fit(stacks, boxes)
    np.testing.assert_allclose(pooled.predict(stacks), BoxRegressor(pool=4).fit(stacks[:, 0], boxes).predict(stacks[:, 0]))
    with pytest.raises(ValueError, match="solver='ridge'"):
        BoxRegressor(features="shape", solver="sgd").fit(stacks, boxes)


def test_embedding_components_equal_pca_of_the_embedding_beside_the_descriptors(tmp_path) -> None:
    from sklearn.decomposition import PCA
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    from sensitivity.regress import MapStack, decode_boxes, regression_features

    rng = np.random.default_rng(4)
    boxes = np.sort(rng.uniform(0, 1, (120, 2, 2)), axis=1).transpose(0, 2, 1).reshape(120, 4)[:, [0, 2, 1, 3]]
    maps = rng.uniform(size=(120, 2, 12, 12))
    # an embedding that knows the box, through 4 of its 20 dimensions' directions
    embedding = boxes @ rng.normal(size=(4, 20))
    embedding += rng.normal(size=(120, 20)) * 0.01
    X = MapStack(maps, embedding)
    model = BoxRegressor(features="shape", alpha=5.0, embedding_components=4, batch_size=50).fit(X, boxes)
    descriptors = regression_features(maps, "shape", None, "none")
    reduced = np.hstack([descriptors, PCA(4).fit(embedding).transform(embedding)])
    scaler = StandardScaler().fit(reduced)
    expected = decode_boxes(Ridge(alpha=5.0).fit(scaler.transform(reduced), boxes).predict(scaler.transform(reduced)),
                            "corners")
    np.testing.assert_allclose(model.predict(X), expected, atol=1e-8)
    assert model.n_embedding_ == 20 and model.n_features_in_ == descriptors.shape[1] + 20
    without = BoxRegressor(features="shape", alpha=5.0).fit(maps, boxes)
    assert model.score(X, boxes) > 0.8 > 0.2 > without.score(maps, boxes)
    model.save(tmp_path / "m.npz")
    loaded = BoxRegressor.load(tmp_path / "m.npz")
    assert loaded.n_embedding_ == 20 and loaded.embedding_components == 4
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    with pytest.raises(ValueError, match="MapStack"):
        model.predict(maps)
    with pytest.raises(ValueError, match="exceeds"):
        BoxRegressor(features="shape", embedding_components=21).fit(X, boxes)
    with pytest.raises(ValueError, match="features='shape'"):
        BoxRegressor(embedding_components=2).fit(X, boxes)


def test_version_1_files_load_as_one_channel(tmp_path) -> None:
    rng = np.random.default_rng(1)
    maps, boxes = rng.uniform(size=(20, 8, 8)), np.tile([0.1, 0.2, 0.6, 0.9], (20, 1))
    model = BoxRegressor(pool=4).fit(maps, boxes)
    model.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as data:
        old = {k: data[k] for k in data.files if k != "n_channels"} | {"format_version": np.array(1)}
    np.savez(tmp_path / "v1.npz", **old)
    loaded = BoxRegressor.load(tmp_path / "v1.npz")
    assert loaded.n_channels_ == 1 and loaded.features == "pooled"
    np.testing.assert_array_equal(loaded.predict(maps), model.predict(maps))
