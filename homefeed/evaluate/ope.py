"""Off-policy evaluation: a candidate policy's online value, estimated from logs that carry propensities.

Each logged row is one shown slot: its reward ``r`` (a click, a save), the
probability ``π0`` that the logging policy put the shown item in that slot,
and, for the candidate, the probability ``πe`` it would have put the same item
there.  With ``w = πe / π0`` and, for the model-based estimators, a reward
model's estimate ``q(a)`` for the shown item and ``q(πe) = Σ_a πe(a) q(a)``
for what the candidate would show:

    IPS   = mean(w r)                                  unbiased, high variance
    SNIPS = Σ w r / Σ w                                 self-normalized: bias O(1/n), far less variance
    DM    = mean(q(πe))                                 low variance, biased as the reward model is
    DR    = mean(q(πe) + w (r − q(a)))                  unbiased if either π0 or q is right
    SNDR  = mean(q(πe)) + Σ w (r − q(a)) / Σ w          DR with a self-normalized correction

Confidence intervals are normal intervals from each estimator's per-row
influence terms (the delta method for the self-normalized ones): exact
enough at the row counts OPE needs, and O(n), so ten million rows take well
under a second.  DM's interval treats the reward model as fixed.

Why our own and not the Open Bandit Pipeline: these are a handful of NumPy
lines each, OBP pins old versions of scikit-learn and PyTorch, and the tests
check every formula against a textbook transcription on the real OBD sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from homefeed.evaluate.bootstrap import Estimate, EvaluationError

ESTIMATORS = ("ips", "snips", "dm", "dr", "sndr")
Z95 = 1.959963984540054


@dataclass(frozen=True)
class LoggedFeedback:
    """Per shown slot: reward, logging propensity, the candidate's probability of the shown item; optionally q."""

    reward: np.ndarray
    pscore: np.ndarray
    target: np.ndarray
    q_logged: np.ndarray | None = None
    q_target: np.ndarray | None = None


def from_action_dist(
    reward: np.ndarray,
    action: np.ndarray,
    position: np.ndarray | None,
    pscore: np.ndarray,
    action_dist: np.ndarray,
    estimated_rewards: np.ndarray | None = None,
    atol: float = 1e-6,
) -> LoggedFeedback:
    """Feedback from the candidate's full distribution ``action_dist[row, action, slot]`` (slots 0-based).

    ``action_dist`` may be (rows, actions) for a single slot, and ``position`` None then, as the Open Bandit
    Pipeline lays them out.  Each row's distribution over actions must sum to 1 (within ``atol``) in every
    slot, with no negative share: anything else is not a policy, and its estimates would mean nothing.
    ``estimated_rewards`` has the same shape: the reward model's estimate for every action in every slot.
    """
    dist = _per_slot(action_dist, "action_dist")
    rows, n_actions, n_slots = dist.shape
    if position is None:
        if n_slots != 1:
            raise EvaluationError(f"position is needed: the candidate's distribution covers {n_slots} slots")
        position = np.zeros(rows, np.int64)
    action, position = np.asarray(action), np.asarray(position)
    for name, values in (("reward", reward), ("action", action), ("position", position), ("pscore", pscore)):
        if len(values) != rows:
            raise EvaluationError(f"{name} has {len(values)} rows, the candidate's distribution {rows}")
    for name, values, size in (("action", action, n_actions), ("position", position, n_slots)):
        if values.size and (values.min() < 0 or values.max() >= size):
            raise EvaluationError(f"{name} must lie in [0, {size}) (0-based), got {values.min()} to {values.max()}")
    sums = dist.sum(axis=1)  # (rows, slots)
    off = ~(np.abs(sums - 1.0) <= atol) | (dist < 0).any(axis=1)
    if off.any():
        row, slot = np.argwhere(off)[0]
        raise EvaluationError(
            f"the candidate's action distribution must be probabilities summing to 1 over actions in every row "
            f"and slot: {int(off.sum())} of {off.size} do not (row {row}, slot {slot} sums to {sums[row, slot]:.6g})"
        )
    rows_at = np.arange(rows)
    action, position = action.astype(np.int64), position.astype(np.int64)
    target = dist[rows_at, action, position]
    if estimated_rewards is None:
        return LoggedFeedback(reward, pscore, target)
    q = _per_slot(estimated_rewards, "estimated_rewards")
    if q.shape != dist.shape:
        raise EvaluationError(f"estimated_rewards has shape {q.shape}, the candidate's distribution {dist.shape}")
    q_logged = q[rows_at, action, position]
    q_target = np.einsum("ij,ij->i", dist[rows_at, :, position], q[rows_at, :, position])
    return LoggedFeedback(reward, pscore, target, q_logged, q_target)


def _per_slot(values: np.ndarray, name: str) -> np.ndarray:
    """(rows, actions, slots) from that or from (rows, actions) for one slot."""
    values = np.asarray(values, np.float64)
    if values.ndim == 2:
        return values[:, :, None]
    if values.ndim != 3:
        raise EvaluationError(f"{name} must be (rows, actions) or (rows, actions, slots), got shape {values.shape}")
    return values


def _interval(value: float, influence: np.ndarray, z: float) -> Estimate:
    se = float(np.std(influence, ddof=1) / np.sqrt(len(influence))) if len(influence) > 1 else float("inf")
    return Estimate(value, value - z * se, value + z * se)


def _weights(data: LoggedFeedback) -> np.ndarray:
    pscore = np.asarray(data.pscore, dtype=np.float64)
    bad = ~np.isfinite(pscore) | (pscore <= 0)
    if bad.any():
        raise EvaluationError(
            f"{int(bad.sum())} of {len(pscore)} logged rows have no usable propensity (null, NaN or <= 0): "
            "importance-weighted estimators (IPS, SNIPS, DR, SNDR) need the logging policy's probabilities"
        )
    return np.asarray(data.target, dtype=np.float64) / pscore


def _model(data: LoggedFeedback, name: str) -> tuple[np.ndarray, np.ndarray]:
    if data.q_logged is None or data.q_target is None:
        raise EvaluationError(f"{name.upper()} needs a reward model's estimates (q_logged and q_target)")
    q_logged, q_target = np.asarray(data.q_logged, np.float64), np.asarray(data.q_target, np.float64)
    if not (np.isfinite(q_logged).all() and np.isfinite(q_target).all()):
        raise EvaluationError(f"{name.upper()}: the reward model's estimates have missing (NaN) values")
    return q_logged, q_target


def estimate(data: LoggedFeedback, estimators: tuple[str, ...] = ESTIMATORS, z: float = Z95) -> dict[str, Estimate]:
    """The candidate's value per logged slot by each estimator, with a confidence interval (95% by default)."""
    unknown = [e for e in estimators if e not in ESTIMATORS]
    if unknown:
        raise EvaluationError(f"unknown estimator(s) {', '.join(unknown)}; expected {', '.join(ESTIMATORS)}")
    r = np.asarray(data.reward, dtype=np.float64)
    if len(r) == 0:
        raise EvaluationError("no logged rows to evaluate")
    out: dict[str, Estimate] = {}
    needs_weights = {"ips", "snips", "dr", "sndr"} & set(estimators)
    w = _weights(data) if needs_weights else None
    for name in estimators:
        if name == "ips":
            terms = w * r
            out[name] = _interval(float(terms.mean()), terms, z)
        elif name == "snips":
            v = float((w * r).sum() / w.sum())
            out[name] = _interval(v, w * (r - v) / w.mean(), z)
        elif name == "dm":
            _, q_target = _model(data, name)
            out[name] = _interval(float(q_target.mean()), q_target, z)
        elif name == "dr":
            q_logged, q_target = _model(data, name)
            terms = q_target + w * (r - q_logged)
            out[name] = _interval(float(terms.mean()), terms, z)
        else:  # sndr
            q_logged, q_target = _model(data, name)
            correction = float((w * (r - q_logged)).sum() / w.sum())
            v = float(q_target.mean()) + correction
            out[name] = _interval(v, q_target + w * (r - q_logged - correction) / w.mean(), z)
    return out
