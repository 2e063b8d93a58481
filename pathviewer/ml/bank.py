"""Prediction Bank and its Sinkhorn-Knopp pseudo-label solver (NGSD step 5).

The bank holds the latest teacher probability ``p_i`` (positive class) of every patch of every
positive training slide.  Pseudo-labels ``q_i`` are the solution of the entropic optimal transport
problem between the patches (uniform mass 1/N each) and the two classes with marginals
``(1 - K, K)``, cost ``-log p``, regularisation ``1 / lam``.  Its Sinkhorn-Knopp fixed point is

    Q_ic = u_i * P_ic ** lam * v_c,

and normalising each row gives, for two classes, a one-parameter family

    q_i = sigmoid(lam * logit(p_i) + tau),   tau = log(v_1 / v_0),

so the whole problem reduces to the scalar equation ``mean_i q_i(tau) = K``, monotone in ``tau``.
:func:`solve_pseudo_labels` solves it by safeguarded bisection (Newton steps inside the bracket,
bisection whenever Newton would leave it), to float64 precision, in a few vectorised passes.
:func:`sinkhorn_plain` is the textbook alternating normalisation, used by the tests to check it.
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-6


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), _EPS, 1.0 - _EPS)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free form of 1 / (1 + exp(-z))


def solve_tau(
    probs: np.ndarray, k: float, lam: float = 1.0, tol: float = 1e-10, max_iter: int = 100
) -> float:
    """The shift ``tau`` with ``mean(sigmoid(lam * logit(p) + tau)) = k``.

    Parameters
    ----------
    probs
        Teacher probabilities of the positive class, any shape.
    k
        Target positive fraction, in (0, 1).
    lam
        Sharpening exponent (1 / entropic regularisation).
    tol
        Stop when the constraint error ``|mean q - k|`` is below this.

    Returns
    -------
    float
        ``tau``.
    """
    if not 0.0 < k < 1.0:
        raise ValueError(f"K must be in (0, 1), got {k}")
    z = lam * _logit(probs).ravel()
    if z.size == 0:
        return 0.0
    target = float(k)
    # Bracket: at tau = logit(k) - max z every q <= k; at logit(k) - min z every q >= k.
    base = float(np.log(target) - np.log1p(-target))
    lo, hi = base - float(z.max()), base - float(z.min())
    tau = base - float(z.mean())
    if not lo <= tau <= hi:
        tau = 0.5 * (lo + hi)
    for _ in range(max_iter):
        q = _sigmoid(z + tau)
        err = float(q.mean()) - target
        if abs(err) < tol or hi - lo < 1e-14:
            break
        if err > 0:
            hi = tau
        else:
            lo = tau
        slope = float((q * (1.0 - q)).mean())
        step = tau - err / slope if slope > 0 else np.nan
        tau = step if lo < step < hi else 0.5 * (lo + hi)
    return tau


def solve_pseudo_labels(probs: np.ndarray, k: float, lam: float = 1.0) -> np.ndarray:
    """Sinkhorn-Knopp pseudo-labels ``q`` (positive class) with ``sum q = k * N``, closed form.

    Parameters
    ----------
    probs
        Teacher probabilities of the positive class.
    k
        Positive-patch fraction K.
    lam
        Sharpening exponent (1 / entropic regularisation).

    Returns
    -------
    numpy.ndarray
        float64 pseudo-labels, same shape as ``probs``.
    """
    tau = solve_tau(probs, k, lam)
    return _sigmoid(lam * _logit(probs) + tau)


def sinkhorn_plain(
    probs: np.ndarray, k: float, lam: float = 1.0, n_iter: int = 5000, tol: float = 1e-12
) -> np.ndarray:
    """Textbook Sinkhorn-Knopp on the ``(N, 2)`` problem; returns row-normalised ``q`` (positive).

    Alternately rescales the rows of ``P ** lam`` to mass ``1/N`` and the columns to ``(1-K, K)``.
    Slow (many full passes); the reference for :func:`solve_pseudo_labels`.
    """
    p = np.clip(np.asarray(probs, np.float64).ravel(), _EPS, 1.0 - _EPS)
    n = p.size
    # Work in a scaled domain: divide by max so ** lam does not underflow for large lam.
    log_m = lam * np.stack([np.log1p(-p), np.log(p)], axis=1)
    m = np.exp(log_m - log_m.max())
    col_target = np.array([1.0 - k, k])
    q = m / m.sum()
    for _ in range(n_iter):
        q = q / q.sum(axis=1, keepdims=True) / n
        col = q.sum(axis=0)
        q = q * (col_target / col)
        if np.abs(q.sum(axis=1) * n - 1.0).max() < tol:
            break
    rows = q / q.sum(axis=1, keepdims=True)
    return rows[:, 1].reshape(np.shape(probs))


class PredictionBank:
    """Latest teacher probabilities of all positive-slide patches, and their pseudo-labels.

    Parameters
    ----------
    size
        Number of patches of positive training slides (negative-slide patches are never stored:
        their label is known to be 0).
    k
        Positive fraction K of the SK marginals ``(1 - K, K)``.
    lam
        Sharpening exponent of the SK solution.
    init
        Initial probability of patches not yet seen by the teacher.
    """

    def __init__(self, size: int, k: float, lam: float = 1.0, init: float = 0.5) -> None:
        self.probs = np.full(size, init, np.float32)
        self.seen = np.zeros(size, bool)
        self.k = float(k)
        self.lam = float(lam)
        self.tau = 0.0
        self.resolve()

    def __len__(self) -> int:
        return int(self.probs.size)

    def update(self, indices: np.ndarray, probs: np.ndarray) -> None:
        """Store new teacher probabilities for ``indices`` and re-solve the pseudo-labels."""
        indices = np.asarray(indices, np.int64)
        self.probs[indices] = np.asarray(probs, np.float32)
        self.seen[indices] = True
        self.resolve()

    def resolve(self) -> None:
        """Re-solve ``tau`` over the whole bank (Sinkhorn-Knopp, closed form)."""
        if self.probs.size:
            self.tau = solve_tau(self.probs, self.k, self.lam)

    def pseudo_labels(self, indices: np.ndarray | None = None) -> np.ndarray:
        """Pseudo-labels ``q`` (positive class) of ``indices`` (all when None), float32."""
        p = self.probs if indices is None else self.probs[np.asarray(indices, np.int64)]
        return _sigmoid(self.lam * _logit(p) + self.tau).astype(np.float32)

    def positive_fraction(self) -> float:
        """Fraction of bank patches whose pseudo-label is above 0.5."""
        if not self.probs.size:
            return 0.0
        return float((self.pseudo_labels() > 0.5).mean())

    def state_dict(self) -> dict[str, object]:
        """Arrays and numbers to checkpoint."""
        return {
            "probs": self.probs.copy(),
            "seen": self.seen.copy(),
            "k": self.k,
            "lam": self.lam,
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore :meth:`state_dict` (sizes must match)."""
        probs = np.asarray(state["probs"], np.float32)
        if probs.shape != self.probs.shape:
            raise ValueError(f"bank size {probs.shape[0]} != {self.probs.shape[0]}")
        self.probs = probs.copy()
        self.seen = np.asarray(state["seen"], bool).copy()
        self.resolve()
