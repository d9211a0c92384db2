"""Box models: one :class:`~sensitivity.regress.BoxRegressor`, or a :class:`BoxEnsemble` that averages the boxes
of several.

:func:`load_box_model` loads either kind from the ``.npz`` their ``save`` writes: ``sensitivity localize``, the
evaluation stages and the fit stage load box models with it. :func:`average_boxes` is the one averaging of
boxes: the ensemble's, the fit stage's cross-validation of it and the paper study's ensembles.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from os import PathLike
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.utils.validation import check_is_fitted

from sensitivity import __version__
from sensitivity.regress import (
    ABOUT_BOX_MODELS,
    BoxModelTags,
    BoxRegressor,
    MapStack,
    _as_array,
    decode_boxes,
    read_arrays,
    write_arrays,
)

#: Format of an ensemble's file: ``kind`` "ensemble", ``n_members``, the ensemble's ``provenance`` and
#: ``fitted_on``, and each member's :meth:`~sensitivity.regress.BoxRegressor.saved_arrays` under ``member<i>_``.
ENSEMBLE_FORMAT_VERSION = 4


def average_boxes(boxes: Sequence[np.ndarray]) -> np.ndarray:
    """The mean (N, 4) of several models' corner boxes (each (N, 4)), clipped to [0, 1] and ordered as
    :func:`~sensitivity.regress.decode_boxes` leaves a box."""
    if len(boxes) == 0:
        raise ValueError("no boxes to average")
    return decode_boxes(np.mean(np.stack([np.asarray(b, dtype=np.float64) for b in boxes]), axis=0), "corners")


class BoxEnsemble(BoxModelTags, RegressorMixin, BaseEstimator):
    """The mean box of several :class:`~sensitivity.regress.BoxRegressor` (corners averaged, then clipped and
    ordered): to ``sensitivity localize`` and the evaluation, a box model like one of them.

    Parameters
    ----------
    members : the box models. :meth:`fit` fits a clone of each on the same maps; :meth:`from_fitted` takes
        fitted ones as they are.

    Attributes
    ----------
    members_ : the fitted members. They read the same maps: one map shape, one number of channels, one
        embedding (or none), and those that record how their maps were made record the same.
    map_shape_, n_channels_ : of the members' maps (see :class:`~sensitivity.regress.BoxRegressor`).
    n_embedding_ : D, the embedding's dimension the members use (0 when none does).
    n_samples_seen_ : the most training images any member saw.
    provenance_ : how the members' maps were made (absent when none records it); setting it sets every
        member's.
    fitted_on_ : what the fit stage fitted it on and how it chose it.
    """

    def __init__(self, members: Sequence[BoxRegressor] = ()) -> None:
        self.members = members

    def fit(self, X: ArrayLike | torch.Tensor | MapStack, y: ArrayLike) -> BoxEnsemble:
        """Fit a clone of every member on maps ``X`` and boxes ``y`` (N, 4)."""
        if not len(self.members):
            raise ValueError("an ensemble needs at least one member")
        return self._set_members([clone(member).fit(X, y) for member in self.members])

    @classmethod
    def from_fitted(cls, members: Sequence[BoxRegressor]) -> BoxEnsemble:
        """The ensemble of already fitted ``members``, as they are."""
        members = list(members)
        return cls(members)._set_members(members)

    def _set_members(self, members: list[BoxRegressor]) -> BoxEnsemble:
        if not members:
            raise ValueError("an ensemble needs at least one member")
        for member in members:
            if not isinstance(member, BoxRegressor):
                raise TypeError(f"ensemble members must be BoxRegressor, got {type(member).__name__}")
            check_is_fitted(member)
        first = members[0]
        maps = [(m.map_shape_, m.n_channels_) for m in members]
        if len(set(maps)) > 1:
            i = next(i for i, m in enumerate(maps) if m != maps[0])
            raise ValueError(f"ensemble members must share map shape and channels: member {i} was fitted on "
                             f"{maps[i][1]}-channel maps of shape {maps[i][0]}, member 0 on {maps[0][1]}-channel "
                             f"maps of shape {maps[0][0]}")
        embeddings = sorted({m.n_embedding_ for m in members} - {0})
        if len(embeddings) > 1:
            raise ValueError(f"ensemble members must share the classifier's embedding: they use {embeddings} values")
        made = [(i, m.provenance_) for i, m in enumerate(members) if getattr(m, "provenance_", None) is not None]
        for i, provenance in made[1:]:
            if provenance != made[0][1]:
                differ = sorted(key for key in provenance.keys() | made[0][1].keys()
                                if provenance.get(key) != made[0][1].get(key))
                details = ", ".join(f"{key}={provenance.get(key)!r} (member {made[0][0]}: {made[0][1].get(key)!r})"
                                    for key in differ)
                raise ValueError(f"ensemble members must share map provenance: member {i}'s maps were made with "
                                 f"{details}")
        self.members_ = members
        self.map_shape_, self.n_channels_ = first.map_shape_, first.n_channels_
        self.n_embedding_ = embeddings[0] if embeddings else 0
        self.n_samples_seen_ = max(m.n_samples_seen_ for m in members)
        return self

    @property
    def provenance_(self) -> dict:
        check_is_fitted(self, "members_")
        made = [m.provenance_ for m in self.members_ if getattr(m, "provenance_", None) is not None]
        if not made:
            raise AttributeError("no member of the ensemble records how its maps were made")
        return made[0]

    @provenance_.setter
    def provenance_(self, made: dict) -> None:
        check_is_fitted(self, "members_")
        for member in self.members_:
            member.provenance_ = made

    def transform_features(self, X: ArrayLike | torch.Tensor | MapStack) -> dict[tuple, np.ndarray]:
        """Each member's regression features of maps ``X``, computed once per feature setting (by
        :meth:`~sensitivity.regress.BoxRegressor.feature_settings`)."""
        check_is_fitted(self, "members_")
        features: dict[tuple, np.ndarray] = {}
        for member in self.members_:
            key = member.feature_settings()
            if key not in features:
                features[key] = member.transform_features(X)
        return features

    def predict_features(self, features: dict[tuple, np.ndarray]) -> np.ndarray:
        """Boxes (N, 4) from features made by :meth:`transform_features`."""
        check_is_fitted(self, "members_")
        return average_boxes([m.predict_features(features[m.feature_settings()]) for m in self.members_])

    def predict(self, X: ArrayLike | torch.Tensor | MapStack) -> np.ndarray:
        """Boxes (N, 4): the mean of the members' boxes, clipped to [0, 1] with x1 <= x2 and y1 <= y2."""
        check_is_fitted(self, "members_")
        X_arr = _as_array(X)
        if X_arr.ndim >= 3 and self.map_shape_ is not None and X_arr.shape[-2:] != tuple(self.map_shape_):
            raise ValueError(f"maps have shape {X_arr.shape[-2:]}, the model was fitted on {self.map_shape_}")
        step = min(m.batch_size for m in self.members_)
        out = [self.predict_features(self.transform_features(X_arr[start:start + step]))
               for start in range(0, len(X_arr), step)]
        return np.concatenate(out) if out else np.empty((0, 4))

    score = BoxRegressor.score

    def save(self, path: str | PathLike[str]) -> None:
        """Write the ensemble to ``path`` as ONE portable ``.npz`` (no pickle; format
        :data:`ENSEMBLE_FORMAT_VERSION`); the same ensemble always gives the same bytes."""
        write_arrays(path, self.saved_arrays())

    def saved_arrays(self) -> dict[str, Any]:
        """What :meth:`save` writes: one array per name."""
        check_is_fitted(self, "members_")
        arrays: dict[str, Any] = {
            "format_version": ENSEMBLE_FORMAT_VERSION,
            "kind": "ensemble",
            "package_version": __version__,
            "n_members": len(self.members_),
            "provenance": json.dumps(getattr(self, "provenance_", None), sort_keys=True),
            "fitted_on": json.dumps(getattr(self, "fitted_on_", None), sort_keys=True),
        }
        for i, member in enumerate(self.members_):
            arrays |= {f"member{i}_{key}": value for key, value in member.saved_arrays().items()}
        return arrays

    @classmethod
    def load(cls, path: str | PathLike[str]) -> BoxEnsemble:
        """Restore an ensemble written by :meth:`save` (errors as :meth:`BoxRegressor.load`'s)."""
        return cls.from_arrays(read_arrays(path), path)

    @classmethod
    def from_arrays(cls, data: dict[str, np.ndarray], path: str | PathLike[str]) -> BoxEnsemble:
        """The ensemble of :meth:`saved_arrays`' arrays, read from the file ``path`` (named in errors)."""
        if str(data.get("kind", "")) != "ensemble" or not {"format_version", "n_members"} <= data.keys():
            raise ValueError(f"{path}: not an ensemble of box models; {ABOUT_BOX_MODELS}")
        version = int(data["format_version"])
        if version > ENSEMBLE_FORMAT_VERSION:
            raise ValueError(f"{path} has format version {version}; this version of sensitivity reads ensembles "
                             f"up to {ENSEMBLE_FORMAT_VERSION}")
        members = []
        for i in range(int(data["n_members"])):
            prefix = f"member{i}_"
            part = {key[len(prefix):]: value for key, value in data.items() if key.startswith(prefix)}
            members.append(BoxRegressor.from_arrays(part, f"{path} (member {i})"))
        try:
            ensemble = cls.from_fitted(members)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None
        recorded = json.loads(str(data["provenance"]))
        if recorded != getattr(ensemble, "provenance_", None):
            raise ValueError(f"{path}: ensemble members must share map provenance: the ensemble records {recorded!r}, "
                             f"its members {getattr(ensemble, 'provenance_', None)!r}")
        fitted_on = json.loads(str(data["fitted_on"]))
        if fitted_on is not None:
            ensemble.fitted_on_ = fitted_on
        return ensemble


#: What :func:`load_box_model` returns.
BoxModel = BoxRegressor | BoxEnsemble


def load_box_model(path: str | PathLike[str]) -> BoxModel:
    """The box model saved at ``path``: a :class:`BoxEnsemble` or a :class:`~sensitivity.regress.BoxRegressor`
    (of any format version); any other file is a ValueError (FileNotFoundError when there is none) in one line
    naming the file and saying what a box model is."""
    data = read_arrays(path)
    if str(data.get("kind", "")) == "ensemble":
        return BoxEnsemble.from_arrays(data, path)
    return BoxRegressor.from_arrays(data, path)
