"""Absent-part queries for Stage 2: teach the model that a part can be missing.

In-shape negatives alone never show a query an object that lacks the part, so "handle" learns to
fire on whatever looks most handle-like on any object (issue #16: handles on boxes and bowls).
For every training sample we add queries for parts the object does not have, with all-zero
targets on every patch. A candidate is excluded when any of its names shares a word with any name
of the object's own parts (so "lid" is never a negative on a capped bottle — "cap lid" — nor
"handle" on a bag with a "carry handle", nor "grip" on a drill whose handle it is).
"""
from __future__ import annotations

import numpy as np

from ..data.shapes import related_words

# The names users ask for most (grasp targets): drawn first, so they are negatives in every batch.
COMMON_QUERIES = ["handle", "cap", "lid", "spout", "knob", "blade", "trigger", "tip", "button", "nozzle", "neck"]


def absent_candidates(shape_parts, vocabulary) -> list:
    """Parts of ``vocabulary`` that share no name word with any of ``shape_parts``."""
    present = set().union(*(related_words(p) for p in shape_parts)) if shape_parts else set()
    return [c for c in vocabulary if not (related_words(c) & present)]


class AbsentPartSampler:
    """Draws ``count`` absent parts per sample: half from COMMON_QUERIES (those the object lacks),
    the rest from the whole vocabulary. Candidate lists are cached per part set."""

    def __init__(self, vocabulary, count: int):
        self.vocabulary = sorted(set(vocabulary))
        self.count = int(count)
        self._cache: dict = {}

    def candidates(self, shape_parts, absent=None) -> tuple[list, list]:
        if absent is not None:  # given (real clutter): only those, e.g. ["handle", "spout"]
            known = [a for a in absent if a in self.vocabulary]
            return [c for c in COMMON_QUERIES if c in known], known
        key = tuple(sorted(shape_parts))
        if key not in self._cache:
            allowed = absent_candidates(shape_parts, self.vocabulary)
            self._cache[key] = ([c for c in COMMON_QUERIES if c in allowed], allowed)
        return self._cache[key]

    def draw(self, shape_parts, rng: np.random.Generator, absent=None) -> list:
        if self.count <= 0:
            return []
        common, allowed = self.candidates(shape_parts, absent)
        if not allowed:
            return []
        n_common = min(len(common), (self.count + 1) // 2)
        picked = list(rng.choice(common, n_common, replace=False)) if n_common else []
        rest = [c for c in allowed if c not in picked]
        n_rest = min(len(rest), self.count - len(picked))
        if n_rest:
            picked += list(rng.choice(rest, n_rest, replace=False))
        return [str(p) for p in picked]
