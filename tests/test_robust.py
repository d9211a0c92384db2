"""The Huber loss of the box regression: weighted normal equations against scikit-learn, the streamed IRLS against
an in-memory reference built from scikit-learn's StandardScaler, PCA and Ridge(sample_weight), and its point:
images whose boxes the maps cannot say pull the others less."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.linear_model import Ridge
from sklearn.preprocessing import StandardScaler

from sensitivity.boxes import correct_localizations
from sensitivity.normal_equations import NormalEquations
from sensitivity.regress import BoxRegressor, MapStack, decode_boxes, regression_features
from sensitivity.robust import IRLS_STEPS, huber_weights


def test_weighted_normal_equations_equal_ridge_with_sample_weight() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5)) * np.array([0.01, 1.0, 30.0, 2.0, 1.0]) + 4.0
    Y = X @ rng.normal(size=(5, 4)) + rng.normal(size=(200, 4))
    weight = rng.uniform(0.05, 1.0, 200)
    equations = NormalEquations()
    for start in range(0, 200, 70):
        equations.add(X[start:start + 70], Y[start:start + 70], weight[start:start + 70])
    assert equations.rows == 200 and equations.n == pytest.approx(weight.sum())
    for alpha in (0.1, 10.0):
        coef, intercept = equations.solve(alpha)
        reference = Ridge(alpha=alpha).fit(X, Y, sample_weight=weight)
        np.testing.assert_allclose(coef, reference.coef_, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(intercept, reference.intercept_, rtol=1e-8, atol=1e-10)
    unweighted = NormalEquations()
    unweighted.add(X, Y)
    assert not np.allclose(equations.solve(1.0)[0], unweighted.solve(1.0)[0])


def test_huber_weights_are_one_inside_the_threshold_and_shrink_beyond() -> None:
    np.testing.assert_allclose(huber_weights(np.array([0.0, 0.5, 1.0, 2.0, 8.0]), 1.0), [1, 1, 1, 0.5, 0.125])


def reference_huber(X: np.ndarray, Y: np.ndarray, alpha: float, scale: float, components: int = 0,
                    start: int = 0) -> tuple[StandardScaler, Ridge, PCA | None]:
    """IRLS in memory with scikit-learn: PCA of the trailing columns and the standardisation fitted once,
    unweighted; then Ridge refitted with Huber weights of the residual norms."""
    pca = PCA(components).fit(X[:, start:]) if components else None
    reduced = np.hstack([X[:, :start], pca.transform(X[:, start:])]) if pca else X
    scaler = StandardScaler().fit(reduced)
    Z = scaler.transform(reduced)
    ridge = Ridge(alpha=alpha).fit(Z, Y)
    for _ in range(IRLS_STEPS):
        norms = np.linalg.norm(ridge.predict(Z) - Y, axis=1)
        ridge = Ridge(alpha=alpha).fit(Z, Y, sample_weight=huber_weights(norms, scale * np.median(norms)))
    return scaler, ridge, pca


def shape_problem(n: int = 160, outliers: int = 30, seed: int = 1):
    """Map stacks whose bright square is the box, an embedding that knows the box, and ``outliers`` rows whose
    target box is unrelated to their maps (a box the maps cannot say)."""
    rng = np.random.default_rng(seed)
    boxes = np.empty((n, 4))
    maps = rng.uniform(0, 0.2, (n, 2, 16, 16))
    for i in range(n):
        x1, y1 = rng.integers(0, 9, 2)
        w, h = rng.integers(4, 8, 2)
        maps[i, :, y1:y1 + h, x1:x1 + w] += 1.0
        boxes[i] = np.array([x1, y1, x1 + w, y1 + h]) / 16
    embedding = boxes @ rng.normal(size=(4, 10)) + rng.normal(size=(n, 10)) * 0.3
    targets = boxes.copy()
    targets[:outliers] = np.sort(rng.uniform(0, 1, (outliers, 2, 2)), axis=1).transpose(0, 2, 1).reshape(
        outliers, 4)[:, [0, 2, 1, 3]]
    return MapStack(maps, embedding), targets, boxes


def test_huber_fit_equals_reweighted_scikit_learn_ridge_streamed_in_batches() -> None:
    X, targets, _ = shape_problem()
    model = BoxRegressor(features="shape", alpha=3.0, loss="huber", huber_scale=1.0, batch_size=37,
                         embedding_components=3).fit(X, targets)
    features = regression_features(X, "shape", None, "none", embedding=True)
    n_descriptors = features.shape[1] - X.embedding.shape[1]
    scaler, ridge, pca = reference_huber(features, targets, 3.0, 1.0, components=3, start=n_descriptors)
    reduced = np.hstack([features[:, :n_descriptors], pca.transform(features[:, n_descriptors:])])
    expected = decode_boxes(ridge.predict(scaler.transform(reduced)), "corners")
    np.testing.assert_allclose(model.predict(X), expected, atol=1e-7)
    squared = BoxRegressor(features="shape", alpha=3.0, batch_size=37, embedding_components=3).fit(X, targets)
    assert np.abs(model.predict(X) - squared.predict(X)).max() > 1e-3  # the reweighting changed the fit


def test_huber_alpha_path_over_folds_equals_separate_fits_on_each_folds_rows() -> None:
    X, targets, _ = shape_problem(120, 20, seed=2)
    fold = np.arange(120) % 3
    per_fold = BoxRegressor(features="shape", loss="huber", batch_size=50).fit_alpha_path_folds(
        [(MapStack(X.maps[s:s + 50], X.embedding[s:s + 50]), targets[s:s + 50], fold[s:s + 50])
         for s in range(0, 120, 50)], [1.0, 30.0], 3)
    for k, models in enumerate(per_fold):
        kept = fold != k
        for alpha, model in zip([1.0, 30.0], models):
            alone = BoxRegressor(features="shape", loss="huber", alpha=alpha).fit(X.maps[kept], targets[kept])
            assert model.alpha == alpha and model.loss == "huber" and model.n_samples_seen_ == kept.sum()
            np.testing.assert_allclose(model.coef_, alone.coef_, atol=1e-8)
            np.testing.assert_allclose(model.intercept_, alone.intercept_, atol=1e-8)


def test_huber_loss_resists_boxes_the_maps_cannot_say(tmp_path) -> None:
    """A fifth of the training targets are random boxes: the Huber fit localises more of the clean test images
    than least squares, and the loss travels with the saved model."""
    X, targets, _ = shape_problem(200, 60, seed=3)
    test, _, truth = shape_problem(200, 0, seed=4)
    scores = {}
    for loss in ("squared", "huber"):
        model = BoxRegressor(features="shape", alpha=10.0, loss=loss).fit(X.maps, targets)
        scores[loss] = correct_localizations(model.predict(test.maps), [b[None] for b in truth], 0.5).mean()
    assert scores["huber"] > scores["squared"] + 0.05, scores
    model.save(tmp_path / "huber.npz")
    loaded = BoxRegressor.load(tmp_path / "huber.npz")
    assert loaded.loss == "huber" and loaded.huber_scale == 1.0
    np.testing.assert_array_equal(loaded.predict(test.maps), model.predict(test.maps))


def test_huber_loss_settings_are_checked() -> None:
    X, targets, _ = shape_problem(40, 0)
    with pytest.raises(ValueError, match="loss must be one of"):
        BoxRegressor(features="shape", loss="absolute").fit(X.maps, targets)
    with pytest.raises(ValueError, match="huber_scale must be > 0"):
        BoxRegressor(features="shape", loss="huber", huber_scale=0.0).fit(X.maps, targets)
    with pytest.raises(ValueError, match="needs solver='ridge'"):
        BoxRegressor(solver="sgd", loss="huber").fit(X.maps[:, 0], targets)


def test_the_fit_grid_tries_the_huber_loss_on_shape_features_only() -> None:
    from sensitivity.pipeline.fit import candidate_settings, settings_of

    grid = {"alpha": [1.0], "pool": [7, 14], "normalize": ["max"], "parameterisation": ["corners"],
            "features": ["pooled", "shape"], "embedding_components": [0, 16], "loss": ["squared", "huber"]}
    settings = candidate_settings(grid, embedding=True)
    assert [(s["features"], s.get("pool"), s.get("embedding_components"), s.get("loss", "squared"))
            for s in settings] == [("pooled", 7, None, "squared"), ("pooled", 14, None, "squared"),
                                   ("shape", None, 0, "squared"), ("shape", None, 0, "huber"),
                                   ("shape", None, 16, "squared"), ("shape", None, 16, "huber")]
    assert settings_of(BoxRegressor(**settings[3]).get_params())["loss"] == "huber"
    assert all(s.get("loss", "squared") == "squared" for s in candidate_settings(grid | {"loss": ["squared"]}))


def test_normal_equations_forget_their_cached_basis_when_rows_are_added() -> None:
    rng = np.random.default_rng(6)
    X = np.hstack([rng.normal(size=(150, 2)), rng.normal(size=(150, 3)) @ rng.normal(size=(3, 8))])
    Y = X @ rng.normal(size=(10, 4)) + rng.normal(size=(150, 4))
    streamed = NormalEquations()
    streamed.add(X[:60], Y[:60])
    early = streamed.solve(1.0, standardize=True, components=(2, 3))
    streamed.add(X[60:], Y[60:])
    whole = NormalEquations()
    whole.add(X, Y)
    for k in (2, 3):  # the cached eigenvectors serve every k
        np.testing.assert_allclose(streamed.solve(1.0, True, (2, k))[0], whole.solve(1.0, True, (2, k))[0], atol=1e-9)
    assert not np.allclose(early[0], whole.solve(1.0, True, (2, 3))[0])
