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

:class:`PredictionBank` solves the equation over the patches the teacher has scored only, and
keeps it solved at O(batch) cost per update through a histogram of the scored logits (see the
class docstring).
"""

from __future__ import annotations

from collections import deque

import numpy as np

_EPS = 1e-6
#: ``|logit(p)|`` never exceeds this: :func:`_logit` clips ``p`` to ``[_EPS, 1 - _EPS]``.
_LOGIT_MAX = float(np.log1p(-_EPS) - np.log(_EPS))
#: Histogram bins of :class:`PredictionBank` over ``[-lam * _LOGIT_MAX, lam * _LOGIT_MAX]``.
_BINS = 16384


def logit(p: np.ndarray) -> np.ndarray:
    """``log(p / (1 - p))`` in float64, ``p`` clipped to ``[1e-6, 1 - 1e-6]``."""
    p = np.clip(np.asarray(p, np.float64), _EPS, 1.0 - _EPS)
    return np.log(p) - np.log1p(-p)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-z))`` without overflow."""
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free form of 1 / (1 + exp(-z))


def solve_tau(
    probs: np.ndarray,
    k: float,
    lam: float = 1.0,
    tol: float = 1e-10,
    max_iter: int = 100,
    start: float | None = None,
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
    start
        A first guess (e.g. the previous solution after a small change); Newton from there
        usually needs one or two passes.

    Returns
    -------
    float
        ``tau``.
    """
    if not 0.0 < k < 1.0:
        raise ValueError(f"K must be in (0, 1), got {k}")
    return _solve_tau_z(lam * logit(probs).ravel(), k, tol, max_iter, start)


def _solve_tau_z(
    z: np.ndarray, k: float, tol: float = 1e-10, max_iter: int = 100, start: float | None = None
) -> float:
    """:func:`solve_tau` on the sharpened logits ``z = lam * logit(p)``."""
    if z.size == 0:
        return 0.0
    target = float(k)
    # Bracket: at tau = logit(k) - max z every q <= k; at logit(k) - min z every q >= k.
    base = float(np.log(target) - np.log1p(-target))
    lo, hi = base - float(z.max()), base - float(z.min())
    tau = base - float(z.mean()) if start is None else float(start)
    if not lo <= tau <= hi:
        tau = 0.5 * (lo + hi)
    for _ in range(max_iter):
        q = sigmoid(z + tau)
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
    return sigmoid(lam * logit(probs) + tau)


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

    Only the patches the teacher has scored (``seen``) enter the Sinkhorn-Knopp marginal: ``tau``
    solves ``sum_{i seen} sigmoid(lam * logit(p_i) + tau) = K * n_seen``.  Why: the bank exists to
    keep self-distillation from degenerating, and unscored patches must not absorb the positive
    mass.  Solved over the whole bank, the unscored patches (all at ``init``, the vast majority
    early in training) take the ``K * N`` positive mass and the few scored ones are pushed to ~0,
    so the student learns "everything negative".  Unscored patches still get a value from
    :meth:`pseudo_labels` (the same ``tau``), but it is never trained on: the trainer updates a
    patch's entry in the same step before it reads that patch's pseudo-label.  With nothing
    scored, ``tau = 0``.

    :meth:`update` costs O(batch + bins), not O(bank): it keeps a fixed histogram of the scored
    logits ``z_i = lam * logit(p_i)`` over their bounded range (``p`` is clipped to
    ``[1e-6, 1 - 1e-6]``) with, per bin ``b`` of centre ``c_b``, the count and the sums of
    ``d = z - c_b`` and ``d ** 2``.  It takes the old logits of re-scored patches out, puts the new
    ones in, and solves ``tau`` on the bins by safeguarded Newton, warm-started from the previous
    ``tau``, with the second-order Taylor expansion

        sum_{i in b} sigmoid(z_i + tau)
            ~ n_b s(c_b + tau) + S1_b s'(c_b + tau) + S2_b s''(c_b + tau) / 2,

    whose error is third order in the bin width (below 1e-8 in ``mean q`` at ``lam = 5``).
    Counts are exact integers and removals subtract exactly the values once added, so the sums
    only gather float rounding; :meth:`resolve`, the exact full pass, rebuilds the histogram
    from scratch as well.

    Parameters
    ----------
    size
        Number of patches of positive training slides (negative-slide patches are never stored:
        their label is known to be 0).
    k
        Positive fraction K of the SK marginals ``(1 - K, K)``, in (0, 1).
    lam
        Sharpening exponent of the SK solution.
    init
        Initial probability of patches not yet seen by the teacher.
    bins
        Histogram bins of the incremental solver (more: more accurate, slower updates).

    Attributes
    ----------
    probs : numpy.ndarray
        float32 ``(size,)``, latest teacher probability per patch (``init`` when unseen).
    seen : numpy.ndarray
        bool ``(size,)``, whether the teacher has scored the patch.
    tau : float
        Current shift of the pseudo-labels.
    k, lam : float
        As the parameters.  After changing ``k`` or ``lam`` by hand, call :meth:`resolve`.
    """

    def __init__(
        self,
        size: int,
        k: float,
        lam: float = 1.0,
        init: float = 0.5,
        bins: int = _BINS,
        horizon: int = 0,
        groups: np.ndarray | None = None,
        smoothing: float = 0.0,
    ) -> None:
        if bins < 1:
            raise ValueError(f"bins must be >= 1, got {bins}")
        self.probs = np.full(size, init, np.float32)
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        # A re-scored patch keeps this share of its stored logit: the teacher scores one
        # augmented view at a time, and an average over views ranks patches more steadily.
        self.smoothing = float(smoothing)
        # Per-group marginals (groups = the slide of each slot): every group's scored patches
        # sum to K times their number, so a slide whose stain or layout makes the teacher score
        # all of it higher cannot take the positive mass of the others.
        self.groups: np.ndarray | None = None
        self.group_tau = np.zeros(0, np.float64)
        if groups is not None:
            g = np.asarray(groups, np.int64).ravel()
            if g.shape != (size,):
                raise ValueError(f"{g.size} groups for a bank of {size}")
            if size and g.min() < 0:
                raise ValueError("group numbers must be >= 0")
            self.groups = g
            order = np.argsort(g, kind="stable")
            n_groups = int(g.max()) + 1 if size else 0
            cuts = np.searchsorted(g[order], np.arange(n_groups + 1))
            self._members = [order[cuts[i] : cuts[i + 1]] for i in range(n_groups)]
            self.group_tau = np.zeros(n_groups, np.float64)
        self.seen = np.zeros(size, bool)
        self.k = float(k)
        self.lam = float(lam)
        self.tau = 0.0
        self._bins = int(bins)
        self._n_seen = 0
        # Expiry: a score older than ``horizon`` updates leaves the marginal, like an unscored
        # patch.  The teacher's calibration drifts as it trains, and old scores from a more
        # confident (or more timid) teacher would otherwise take the positive mass from the
        # current ones -- the same degeneration as unscored patches, only slower.
        self.horizon = int(horizon)
        self.clock = 0
        self.updated_at = np.full(size, -1, np.int64)
        self._pending: deque[tuple[int, np.ndarray]] = deque()
        self.resolve()

    def __len__(self) -> int:
        return int(self.probs.size)

    @property
    def seen_count(self) -> int:
        """Number of patches the teacher has scored."""
        return self._n_seen

    def update(self, indices: np.ndarray, probs: np.ndarray | float) -> None:
        """Store new teacher probabilities for ``indices`` and re-solve ``tau`` incrementally.

        Parameters
        ----------
        indices
            Bank slots, any integer array (negative values count from the end).  A slot given
            more than once takes its last probability.
        probs
            Teacher probabilities of the positive class, one per index (or one for all).

        Raises
        ------
        IndexError
            An index outside the bank.
        ValueError
            Shapes differ, or a probability is not finite.
        """
        idx = np.asarray(indices, np.int64).ravel()
        new = np.asarray(probs, np.float32)
        new = np.full(idx.shape, new) if new.ndim == 0 else new.ravel()
        if new.shape != idx.shape:
            raise ValueError(f"{idx.size} indices but {new.size} probabilities")
        if not idx.size:
            return
        if not np.isfinite(new).all():
            raise ValueError("teacher probabilities must be finite")
        n = self.probs.size
        if idx.min() < -n or idx.max() >= n:
            raise IndexError(f"bank index out of range for a bank of {n}")
        idx = np.where(idx < 0, idx + n, idx)
        # Dedupe first, so the probs array and the histogram agree on which write won: the first
        # occurrence in the reversed batch is the last write.
        idx, last = np.unique(idx[::-1], return_index=True)
        new = new[::-1][last]
        if self.lam != self._hist_lam:  # lam changed by hand: the histogram's range is stale
            self.probs[idx] = new
            self.seen[idx] = True
            self.resolve()
            return
        was = self.seen[idx]
        if self.smoothing > 0 and was.any():
            old = logit(self.probs[idx[was]])
            mixed = self.smoothing * old + (1.0 - self.smoothing) * logit(new[was])
            new = new.copy()
            new[was] = sigmoid(mixed).astype(np.float32)
        if was.any():
            self._accumulate(self._z(self.probs[idx[was]]), -1.0)
        self.probs[idx] = new
        self.seen[idx] = True
        if self.groups is not None:
            self._group_z[idx] = self._z(self.probs[idx])
        self._n_seen += int(idx.size - np.count_nonzero(was))
        # From the stored float32 values, so a later removal takes out exactly what went in.
        self._accumulate(self._z(self.probs[idx]), 1.0)
        self.clock += 1
        self.updated_at[idx] = self.clock
        expired = np.zeros(0, np.int64)
        if self.horizon > 0:
            self._pending.append((self.clock, idx))
            expired = self._expire()
        self.tau = self._solve_histogram()
        if self.groups is not None:
            self._solve_groups(np.unique(self.groups[np.concatenate([idx, expired])]))

    def _solve_groups(self, touched: np.ndarray) -> None:
        """Exact per-group ``tau`` of the ``touched`` groups (cost: their sizes, not the bank)."""
        assert self.groups is not None
        for group in touched:
            members = self._members[int(group)]
            z = self._group_z[members[self.seen[members]]]
            self.group_tau[group] = _solve_tau_z(z, self.k, start=self.group_tau[group])

    def _slot_tau(self, indices: np.ndarray | None) -> np.ndarray | float:
        if self.groups is None:
            return self.tau
        g = self.groups if indices is None else self.groups[np.asarray(indices, np.int64)]
        return self.group_tau[g]

    def _expire(self) -> np.ndarray:
        """Take scores older than ``horizon`` updates out of the marginal (O(batch) amortised)."""
        gone: list[np.ndarray] = []
        while self._pending and self._pending[0][0] <= self.clock - self.horizon:
            at, idx = self._pending.popleft()
            old = idx[(self.updated_at[idx] == at) & self.seen[idx]]  # not re-scored since
            if old.size:
                self._accumulate(self._z(self.probs[old]), -1.0)
                self.seen[old] = False
                self._n_seen -= int(old.size)
                gone.append(old)
        return np.concatenate(gone) if gone else np.zeros(0, np.int64)

    def resolve(self) -> None:
        """Re-solve ``tau`` exactly over the seen patches (full pass) and rebuild the histogram.

        Done at construction and by :meth:`load_state_dict`; call it after editing ``probs``,
        ``seen``, ``k`` or ``lam`` by hand, or whenever an exact ``tau`` is wanted.
        """
        p = self.probs[self.seen]
        self._n_seen = int(p.size)
        self.tau = solve_tau(p, self.k, self.lam)  # also validates K; 0.0 with nothing seen
        self._rebuild_histogram(p)
        if self.groups is not None:
            # Cached sharpened logits, so a group's re-solve reads them instead of taking logs.
            self._group_z = self._z(self.probs)
            self._solve_groups(np.arange(len(self._members)))

    def pseudo_labels(self, indices: np.ndarray | None = None) -> np.ndarray:
        """Pseudo-labels ``q`` (positive class) of ``indices`` (all when None), float32.

        Unseen patches get ``sigmoid(lam * logit(init) + tau)``, which is not part of the
        marginal constraint and not meant to be trained on.
        """
        p = self.probs if indices is None else self.probs[np.asarray(indices, np.int64)]
        return sigmoid(self.lam * logit(p) + self._slot_tau(indices)).astype(np.float32)

    def positive_fraction(self) -> float:
        """Fraction of the seen patches whose pseudo-label is above 0.5 (0.0 when none seen)."""
        if not self._n_seen:
            return 0.0
        return float((self.pseudo_labels(np.flatnonzero(self.seen)) > 0.5).mean())

    def state_dict(self) -> dict[str, object]:
        """Arrays and numbers to checkpoint."""
        return {
            "probs": self.probs.copy(),
            "seen": self.seen.copy(),
            "updated_at": self.updated_at.copy(),
            "clock": self.clock,
            "k": self.k,
            "lam": self.lam,
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore :meth:`state_dict` (sizes must match) and re-solve exactly.

        ``k`` and ``lam`` are restored when present; older checkpoints hold only ``probs`` and
        ``seen`` and keep this bank's ``k`` and ``lam``.
        """
        probs = np.asarray(state["probs"], np.float32)
        seen = np.asarray(state["seen"], bool)
        if probs.shape != self.probs.shape:
            raise ValueError(f"bank size {probs.shape[0]} != {self.probs.shape[0]}")
        if seen.shape != probs.shape:
            raise ValueError(f"seen has shape {seen.shape}, probs {probs.shape}")
        self.probs = probs.copy()
        self.seen = seen.copy()
        if "updated_at" in state:
            self.updated_at = np.asarray(state["updated_at"], np.int64).copy()
            self.clock = int(state["clock"])  # type: ignore[call-overload]
        else:  # older checkpoints: every seen score counts as fresh
            self.updated_at = np.where(seen, self.clock, -1).astype(np.int64)
        live = np.flatnonzero(self.seen)
        order = np.argsort(self.updated_at[live], kind="stable")
        stamps = self.updated_at[live][order]
        cuts = np.flatnonzero(np.diff(stamps)) + 1
        self._pending = deque(
            (int(group_stamps[0]), group)
            for group, group_stamps in zip(
                np.split(live[order], cuts), np.split(stamps, cuts), strict=True
            )
            if group.size
        )
        if "k" in state:
            self.k = float(state["k"])  # type: ignore[arg-type]
        if "lam" in state:
            self.lam = float(state["lam"])  # type: ignore[arg-type]
        self.resolve()

    # -- incremental solver ---------------------------------------------------------------------

    def _z(self, p: np.ndarray) -> np.ndarray:
        return self.lam * logit(p)

    def _rebuild_histogram(self, p: np.ndarray) -> None:
        self._hist_lam = self.lam
        # Half-width of the z range, a hair wide so rounding never lands outside it; > 0 even
        # at lam = 0 (every z is 0 then).
        half = max(abs(self.lam) * _LOGIT_MAX * (1.0 + 1e-9), 1e-9)
        self._width = 2.0 * half / self._bins
        self._low = -half
        self._centres = self._low + (np.arange(self._bins) + 0.5) * self._width
        z = self._z(p)
        b = self._bin(z)
        d = z - self._centres[b]
        self._count = np.bincount(b, minlength=self._bins).astype(np.int64)
        # astype: bincount of an empty array is int64, even with weights.
        self._s1 = np.bincount(b, d, minlength=self._bins).astype(np.float64)
        self._s2 = np.bincount(b, d * d, minlength=self._bins).astype(np.float64)

    def _bin(self, z: np.ndarray) -> np.ndarray:
        b = np.floor((z - self._low) / self._width).astype(np.int64)
        # Clipping only matters for rounding at the range ends; d is taken from the bin actually
        # used, so the expansion stays valid there.
        return np.clip(b, 0, self._bins - 1, out=b)

    def _accumulate(self, z: np.ndarray, sign: float) -> None:
        b = self._bin(z)
        d = z - self._centres[b]
        np.add.at(self._count, b, int(sign))
        np.add.at(self._s1, b, sign * d)
        np.add.at(self._s2, b, sign * d * d)
        if sign < 0:
            # An emptied bin holds exact zeros, not the rounding residue of add-then-subtract.
            empty = b[self._count[b] == 0]
            self._s1[empty] = 0.0
            self._s2[empty] = 0.0

    def _solve_histogram(self, tol: float = 1e-12, max_iter: int = 100) -> float:
        """``tau`` from the histogram: safeguarded Newton on the Taylor-expanded ``sum q``."""
        n = self._n_seen
        if not n:
            return 0.0
        occupied = np.flatnonzero(self._count)
        c = self._centres[occupied]
        count = self._count[occupied].astype(np.float64)
        s1 = self._s1[occupied]
        half_s2 = 0.5 * self._s2[occupied]
        target = self.k * n
        # Bracket as in solve_tau, widened by 1 so the approximation error (orders of magnitude
        # below the sigmoid's change over a unit shift) cannot put the root outside it.
        base = float(np.log(self.k) - np.log1p(-self.k))
        lo = base - float(c[-1]) - self._width - 1.0
        hi = base - float(c[0]) + self._width + 1.0
        tau = self.tau if lo < self.tau < hi else 0.5 * (lo + hi)
        for _ in range(max_iter):
            s = sigmoid(c + tau)
            d1 = s * (1.0 - s)
            d2 = d1 * (1.0 - 2.0 * s)
            err = float(count @ s + s1 @ d1 + half_s2 @ d2) - target
            if abs(err) <= tol * n:
                break
            if err > 0:
                hi = tau
            else:
                lo = tau
            if hi - lo <= 1e-15 * max(1.0, abs(tau)):
                break
            d3 = d1 * (1.0 - 6.0 * d1)
            slope = float(count @ d1 + s1 @ d2 + half_s2 @ d3)
            step = tau - err / slope if slope > 0 else np.nan
            tau = step if lo < step < hi else 0.5 * (lo + hi)
        return tau
