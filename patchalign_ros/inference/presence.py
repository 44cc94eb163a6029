"""Is the part there at all? A calibrated object-level probability per (object, query).

Patch probabilities say *where* a part would be; on an object without it, "handle" still wins
the most handle-like patches (issue #16: false handles on boxes scored 0.70-0.98 mean point
probability). The presence model reads three statistics of the object's patch logits for the
query — the mean of its top-k logits, the mean of its top-k margins over the best competing name
(the other queries and the background vocabulary), and the share of patches it wins — and maps
them through a logistic regression fitted on the tune split of the real development captures
plus generated shapes (``evaluation.presence.calibrate``). Its output is the part's ``score``;
parts are reported from the operating point up: per query where the tune split has enough of
it (the lowest threshold with object-level precision >= 0.9 for that query), else the threshold
pooled over the calibration queries. Each registry model carries its own coefficients and
thresholds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

FEATURES = ("top_logit", "top_margin", "win_share")


def presence_features(patch_logits: np.ndarray, q: int, threshold: float = 0.5) -> np.ndarray:
    """(3,) statistics of query column ``q`` of (G, C) patch logits against the other columns."""
    g = len(patch_logits)
    k = max(2, g // 16)
    lq = patch_logits[:, q]
    others = np.delete(patch_logits, q, axis=1)
    best_other = others.max(axis=1) if others.shape[1] else np.full(g, -np.inf)
    margin = np.clip(lq - best_other, -30.0, 30.0)
    cut = np.log(threshold / (1.0 - threshold))
    win = (lq > best_other) & (lq >= cut)
    return np.array([np.sort(lq)[-k:].mean(), np.sort(margin)[-k:].mean(), win.mean()])


def round_down(value: float) -> float:
    """4 decimals, rounded down (a value already at 4 decimals stays as it is)."""
    return math.floor(float(value) * 1e4 + 1e-6) / 1e4


@dataclass
class PresenceModel:
    weights: np.ndarray
    bias: float
    threshold: float = 0.5      # report a part from this probability up (queries not listed below)
    note: str = ""              # where the coefficients and the threshold come from
    query_thresholds: dict | None = None  # cleaned query -> its own operating point

    def threshold_for(self, query: str) -> float:
        """The query's operating point: the highest listed one among the names it is scored by
        (its synonyms and query family): "grip" is embedded as "handle" is, so it must not pass
        at a lower threshold (measured: held-out "grip" precision 0.40 at the pooled point,
        "handle" 0.67 at its own)."""
        from ..data.shapes import family_groups
        from ..text.prompts import clean_label

        names = {clean_label(n) for group in family_groups(query) for n in group}
        listed = [float(t) for name, t in (self.query_thresholds or {}).items() if name in names]
        return max(listed) if listed else float(self.threshold)

    def probability(self, features: np.ndarray) -> float:
        z = float(np.dot(self.weights, features) + self.bias)
        return float(0.5 * (1.0 + np.tanh(0.5 * z)))

    @classmethod
    def from_dict(cls, data: dict | None) -> "PresenceModel | None":
        if not data:
            return None
        names = tuple(data.get("features", FEATURES))
        if names != FEATURES:
            raise ValueError(f"presence model features {names} do not match this version's {FEATURES}")
        weights = np.asarray(data["weights"], dtype=np.float64)
        if weights.shape != (len(FEATURES),) or not np.all(np.isfinite(weights)):
            raise ValueError(f"presence model needs {len(FEATURES)} finite weights, got {data['weights']!r}")
        threshold = float(data.get("threshold", 0.5))
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"presence threshold must be in [0, 1], got {threshold}")
        per_query = {str(k): float(v) for k, v in (data.get("query_thresholds") or {}).items()}
        if not all(0.0 <= v <= 1.0 for v in per_query.values()):
            raise ValueError(f"presence query thresholds must be in [0, 1], got {per_query}")
        return cls(weights, float(data["bias"]), threshold, str(data.get("note", "")), per_query)

    def to_dict(self) -> dict:
        # thresholds are rounded down: each is the score of a tune object it must still admit
        return {"features": list(FEATURES), "weights": [round(float(w), 6) for w in self.weights],
                "bias": round(float(self.bias), 6), "threshold": round_down(self.threshold),
                "query_thresholds": {k: round_down(v) for k, v in (self.query_thresholds or {}).items()},
                "note": self.note}
