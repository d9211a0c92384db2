"""Streaming (weighted) least squares: normal equations accumulated over batches, solved for any ridge penalty."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg

MAX_GRAM_BYTES = 4 * 2**30


class NormalEquations:
    """Streaming sufficient statistics of (weighted) least squares; solved for any ridge penalty afterwards.

    Sums are accumulated about the first batch's means (a shift that keeps the centred
    cross-products accurate). Memory is O(M^2) for M features, whatever the number of rows.
    ``n`` is the total weight (the number of rows when unweighted), ``rows`` the number of rows.
    """

    def __init__(self) -> None:
        self.n = 0.0
        self.rows = 0
        self._cache: dict = {}  # centred sums and principal bases, until the next add

    def add(self, X: np.ndarray, Y: np.ndarray, weight: np.ndarray | None = None) -> None:
        """Accumulate float64 features (n_b, M) and targets (n_b, K), each row with its ``weight`` (default 1)."""
        if self.rows == 0:
            m = X.shape[1]
            if m * m * 8 > MAX_GRAM_BYTES:
                raise ValueError(
                    f"{m} features need a {m}x{m} float64 normal matrix of {m * m * 8 / 1e9:.1f} GB, "
                    f"over the {MAX_GRAM_BYTES / 1e9:.1f} GB limit; use a smaller pool or solver='sgd'"
                )
            self.x0, self.y0 = X.mean(axis=0), Y.mean(axis=0)
            self.sx, self.sy = np.zeros(m), np.zeros(Y.shape[1])
            self.sxx, self.sxy = np.zeros((m, m)), np.zeros((m, Y.shape[1]))
        self._cache.clear()
        Xc, Yc = X - self.x0, Y - self.y0
        wXc = Xc if weight is None else Xc * weight[:, None]
        self.rows += len(X)
        self.n += len(X) if weight is None else float(weight.sum())
        self.sx += wXc.sum(axis=0)
        self.sy += Yc.sum(axis=0) if weight is None else weight @ Yc
        self.sxx += Xc.T @ wXc
        self.sxy += wXc.T @ Yc

    def _centred(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if self.rows == 0:
            raise ValueError("no samples to fit: the batches were empty")
        if "centred" not in self._cache:
            mx, my = self.sx / self.n, self.sy / self.n
            self._cache["centred"] = (mx, my, self.sxx - self.n * np.outer(mx, mx), self.sxy - self.n * np.outer(mx, my))
        return self._cache["centred"]

    def variances(self, basis: np.ndarray | None = None) -> np.ndarray:
        """The (weighted) variance of each feature, or of each column of ``features @ basis``; 1 where it is 0."""
        centred = self._centred()[2]
        variance = np.diag(centred if basis is None else basis.T @ centred @ basis) / self.n
        return np.where(variance > 0, variance, 1.0)

    def solve(self, alpha: float, standardize: bool = False, components: tuple[int, int] | None = None,
              towards: np.ndarray | None = None, penalty: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Ridge solution with unpenalised intercept: ``coef`` (K, M) and ``intercept`` (K,).

        The centred system ``(Cxx + alpha D) W = Cxy`` is solved by Cholesky, or by least
        squares (minimum norm) when it is singular or ill-conditioned. ``D`` is the identity, or
        with ``standardize`` each feature's variance (1 for a constant feature): exactly ridge on
        features standardised to unit variance, as scikit-learn's ``StandardScaler`` + ``Ridge``;
        ``penalty`` gives ``D``'s diagonal instead (e.g. the variances of an unweighted fit).
        ``components=(start, k)`` first replaces the features from column ``start`` on by their
        ``k`` principal components (as scikit-learn's ``PCA`` on those columns, then the ridge); the
        coefficients returned still apply to all M original features.
        ``towards`` (K, M) shrinks the weights towards these instead of zero (the penalty is
        ``alpha (W - towards)' D (W - towards)``): a fitted model fine-tuned on new data, which it becomes
        as ``alpha`` grows (with the intercept refitted to the new data).
        """
        mx, my, centred, cxy = self._centred()
        shift = np.zeros((len(centred), cxy.shape[1]))
        if towards is not None:
            if components is not None:
                raise ValueError("towards= and components= cannot be combined")
            shift = np.asarray(towards, dtype=np.float64).T
            if shift.shape != (len(centred), cxy.shape[1]):
                raise ValueError(f"towards has shape {shift.T.shape}, the system needs {(cxy.shape[1], len(centred))}")
            cxy = cxy - centred @ shift  # solve for W - towards
        basis = self.basis(components)
        reduced, reduced_xy = basis.T @ centred @ basis, basis.T @ cxy
        if penalty is None:
            penalty = self.variances(basis) if standardize else np.ones(len(reduced))
        with warnings.catch_warnings():
            warnings.simplefilter("error", scipy.linalg.LinAlgWarning)
            try:
                W = scipy.linalg.solve(reduced + alpha * np.diag(penalty), reduced_xy, assume_a="pos")
            except (np.linalg.LinAlgError, scipy.linalg.LinAlgWarning):
                W = scipy.linalg.lstsq(reduced + alpha * np.diag(penalty), reduced_xy)[0]
        W = basis @ W + shift
        return W.T, (self.y0 + my) - (self.x0 + mx) @ W

    def basis(self, components: tuple[int, int] | None) -> np.ndarray:
        """(M, M') map from the kept features to the original ones: the identity, or the identity on the
        first ``start`` features and the top ``k`` eigenvectors of the rest's covariance (computed once per
        ``start`` until the next :meth:`add`, whatever ``k`` and the penalty)."""
        centred = self._centred()[2]
        m = len(centred)
        if components is None:
            return np.eye(m)
        start, k = components
        if not (0 <= start < m and 1 <= k <= m - start):
            raise ValueError(f"components={components}: need 0 <= start < {m} and 1 <= k <= {m} - start")
        if ("eigh", start) not in self._cache:
            values, vectors = np.linalg.eigh(centred[start:, start:])
            self._cache["eigh", start] = vectors[:, np.argsort(values)[::-1]]
        basis = np.zeros((m, start + k))
        basis[:start, :start] = np.eye(start)
        basis[start:, start:] = self._cache["eigh", start][:, :k]
        return basis
