"""Tests for sensitivity.box_model: an ensemble of box models, and loading either kind."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from sensitivity.box_model import ENSEMBLE_FORMAT_VERSION, BoxEnsemble, average_boxes, load_box_model
from sensitivity.boxes import corloc
from sensitivity.regress import BoxRegressor, MapStack, read_arrays, write_arrays

MADE = {"model": "efficientnet_lite0", "target": "gestalt", "aggregate": "max", "method": "gradient", "map_size": 8}


def maps_and_boxes(n: int = 60, size: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Maps that light up their box (so the members learn something) and those boxes."""
    rng = np.random.default_rng(seed)
    centre, half = rng.uniform(0.3, 0.7, (n, 2)), rng.uniform(0.1, 0.3, (n, 2))
    boxes = np.column_stack([centre - half, centre + half])
    maps = 0.3 * rng.random((n, size, size))
    for m, box in zip(maps, boxes):
        x1, y1, x2, y2 = (box * size).round().astype(int)
        m[y1:y2, x1:x2] += 1.0
    return maps, boxes


def members() -> list[BoxRegressor]:
    """Different features and box parameterisations: averaging corners differs from averaging parameters."""
    return [BoxRegressor(pool=2, alpha=0.1), BoxRegressor(pool=4, normalize="max", target="centre_logsize"),
            BoxRegressor(features="shape", alpha=10.0, target="centre_size")]


def test_average_boxes_is_the_mean_corner_box_clipped_and_ordered() -> None:
    a = np.array([[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0]])
    b = np.array([[0.3, 0.4, 0.7, 0.8], [0.5, 0.5, 0.5, 0.5]])
    np.testing.assert_allclose(average_boxes([a, b]), [[0.2, 0.3, 0.6, 0.7], [0.25, 0.25, 0.75, 0.75]])
    # out-of-range or unordered inputs come out as valid boxes, as decode_boxes leaves them
    np.testing.assert_allclose(average_boxes([np.array([[0.9, -0.4, 0.1, 1.6]])]), [[0.1, 0.0, 0.9, 1.0]])
    with pytest.raises(ValueError, match="no boxes"):
        average_boxes([])


def test_ensemble_predicts_the_mean_of_its_members_boxes() -> None:
    X, y = maps_and_boxes()
    unfitted = members()
    ensemble = BoxEnsemble(unfitted).fit(X[:40], y[:40])
    assert all(not hasattr(m, "coef_") for m in unfitted)  # fit fits clones
    separate = [m.fit(X[:40], y[:40]) for m in members()]
    member_boxes = [m.predict(X[40:]) for m in separate]
    np.testing.assert_allclose(ensemble.predict(X[40:]), np.mean(member_boxes, axis=0), rtol=0, atol=1e-12)
    # corners are averaged, not the members' own parameterisations
    raw = np.mean([m.transform_features(X[40:]) @ m.coef_.T + m.intercept_ for m in separate[1:]], axis=0)
    two = BoxEnsemble.from_fitted(separate[1:])
    assert not np.allclose(two.predict(X[40:]), separate[1].predict(X[40:]))
    assert not np.allclose(two.predict(X[40:]), np.clip(raw, 0, 1))
    assert ensemble.map_shape_ == (8, 8) and ensemble.n_channels_ == 1 and ensemble.n_embedding_ == 0
    assert ensemble.n_samples_seen_ == 40
    assert ensemble.score(X[40:], y[40:]) == corloc(ensemble.predict(X[40:]), [box[None] for box in y[40:]]) > 0
    # batches of the smallest member batch size give the same boxes
    small = BoxEnsemble.from_fitted([m.set_params(batch_size=7) for m in separate])
    np.testing.assert_allclose(small.predict(X[40:]), ensemble.predict(X[40:]), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match=r"maps have shape \(6, 6\), the model was fitted on \(8, 8\)"):
        ensemble.predict(np.zeros((2, 6, 6)))
    with pytest.raises(NotFittedError):
        BoxEnsemble(members()).predict(X)


def test_ensemble_of_embedding_and_map_members_reads_one_map_stack() -> None:
    X, y = maps_and_boxes()
    stack = MapStack(np.stack([X, X ** 2], axis=1), np.random.default_rng(3).normal(size=(60, 12)))
    parts = [BoxRegressor(features="shape", embedding_components=3), BoxRegressor(pool=4)]
    ensemble = BoxEnsemble(parts).fit(stack, y)
    assert ensemble.n_channels_ == 2 and ensemble.n_embedding_ == 12
    np.testing.assert_allclose(ensemble.predict(stack), np.mean([m.predict(stack) for m in ensemble.members_], axis=0))


def test_save_load_round_trip_gives_the_same_bytes_and_boxes(tmp_path) -> None:
    X, y = maps_and_boxes()
    ensemble = BoxEnsemble(members()).fit(X, y)
    ensemble.provenance_ = MADE
    ensemble.fitted_on_ = {"dataset": "demo", "score": 0.5}
    ensemble.save(tmp_path / "a.npz")
    ensemble.save(tmp_path / "b.npz")
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    loaded = load_box_model(tmp_path / "a.npz")
    assert isinstance(loaded, BoxEnsemble) and len(loaded.members_) == 3
    assert loaded.provenance_ == MADE and all(m.provenance_ == MADE for m in loaded.members_)
    assert loaded.fitted_on_ == {"dataset": "demo", "score": 0.5}
    assert [m.get_params() for m in loaded.members_] == [m.get_params() for m in ensemble.members_]
    np.testing.assert_array_equal(loaded.predict(X), ensemble.predict(X))
    loaded.save(tmp_path / "c.npz")
    assert (tmp_path / "c.npz").read_bytes() == (tmp_path / "a.npz").read_bytes()
    data = read_arrays(tmp_path / "a.npz")
    assert str(data["kind"]) == "ensemble" and int(data["format_version"]) == ENSEMBLE_FORMAT_VERSION
    assert {"member2_params", "member2_coef", "member2_intercept"} <= data.keys()
    with pytest.raises(ValueError, match="an ensemble of box models, not one; load it with .*load_box_model"):
        BoxRegressor.load(tmp_path / "a.npz")


def test_single_box_model_files_still_load_as_before(tmp_path) -> None:
    X, y = maps_and_boxes()
    single = BoxRegressor(pool=4).fit(X, y)
    single.save(tmp_path / "one.npz")
    loaded = load_box_model(tmp_path / "one.npz")
    assert type(loaded) is BoxRegressor and loaded.get_params() == single.get_params()
    np.testing.assert_array_equal(loaded.predict(X), single.predict(X))
    with pytest.raises(ValueError, match=r"junk.npz: not a box model \(not an .npz archive\); a box model is"):
        (tmp_path / "junk.npz").write_bytes(b"junk")
        load_box_model(tmp_path / "junk.npz")
    with pytest.raises(FileNotFoundError, match="none.npz: no such file"):
        load_box_model(tmp_path / "none.npz")


def test_members_with_other_maps_are_refused(tmp_path) -> None:
    X, y = maps_and_boxes()
    a, b = BoxRegressor(pool=2).fit(X, y), BoxRegressor(pool=4).fit(X, y)
    a.provenance_, b.provenance_ = MADE, MADE | {"method": "cam"}
    with pytest.raises(ValueError, match=r"must share map provenance: member 1's maps were made with "
                                         r"method='cam' \(member 0: 'gradient'\)"):
        BoxEnsemble.from_fitted([a, b])
    # a member that records nothing takes the others' record
    del b.provenance_
    assert BoxEnsemble.from_fitted([b, a]).provenance_ == MADE
    stacked = BoxRegressor(pool=2).fit(np.stack([X, X], axis=1), y)
    with pytest.raises(ValueError, match="must share map shape and channels: member 1 was fitted on 2-channel"):
        BoxEnsemble.from_fitted([b, stacked])
    with pytest.raises(ValueError, match="at least one member"):
        BoxEnsemble.from_fitted([])
    with pytest.raises(NotFittedError):
        BoxEnsemble.from_fitted([BoxRegressor()])

    # a file whose members' maps were made otherwise is refused, naming the file
    b.provenance_ = MADE
    BoxEnsemble.from_fitted([a, b]).save(tmp_path / "e.npz")
    data = read_arrays(tmp_path / "e.npz")
    data["member1_provenance"] = np.asarray(json.dumps(MADE | {"model": "resnet50"}, sort_keys=True))
    write_arrays(tmp_path / "mixed.npz", data)
    with pytest.raises(ValueError, match=r"mixed.npz: ensemble members must share map provenance: member 1's maps "
                                         r"were made with model='resnet50'"):
        load_box_model(tmp_path / "mixed.npz")
    data["member1_provenance"] = np.asarray("null")
    data["provenance"] = np.asarray(json.dumps(MADE | {"target": "class"}))
    write_arrays(tmp_path / "other.npz", data)
    with pytest.raises(ValueError, match="other.npz: ensemble members must share map provenance: the ensemble"):
        load_box_model(tmp_path / "other.npz")
