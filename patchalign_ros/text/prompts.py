"""Label cleaning and the official prompt ensembles."""
from __future__ import annotations

import re

PART_TEMPLATES = ("{}", "a {}", "{} part")
PART_OF_OBJECT_TEMPLATES = ("a {} of a {}", "the {} of a {}", "{} of {}", "a {} part of a {}")

_PUNCT = re.compile(r"[^\w\s]|_", re.UNICODE)
_SPACES = re.compile(r"\s+")

MAX_QUERY_CHARS = 200
MAX_QUERIES = 64  # one request's text encoding stays well under a second


def clean_label(label: str) -> str:
    """Lower-case, '_' and punctuation to spaces, spaces collapsed ("Mug_Handle!" -> "mug handle")."""
    if not isinstance(label, str):
        raise TypeError(f"a part name must be a string, got {type(label).__name__}")
    return _SPACES.sub(" ", _PUNCT.sub(" ", label.lower())).strip()


def validate_queries(queries) -> list[str]:
    """Queries as given, checked: a non-empty list of non-empty, reasonably short names."""
    if isinstance(queries, str):
        queries = [q for q in queries.split(",")]
    if not all(isinstance(q, str) for q in queries):
        raise ValueError("part names must be strings")
    queries = [q.strip() for q in queries]
    if not queries or all(not q for q in queries):
        raise ValueError("no part names given (queries is empty)")
    if len(queries) > MAX_QUERIES:
        raise ValueError(f"{len(queries)} part names in one request; at most {MAX_QUERIES}")
    for q in queries:
        if not clean_label(q):
            raise ValueError(f"part name {q!r} is empty after cleaning")
        if len(q) > MAX_QUERY_CHARS:
            raise ValueError(f"part name of {len(q)} characters is too long (max {MAX_QUERY_CHARS})")
    if len(set(queries)) != len(queries):
        raise ValueError("duplicate part names in queries")
    return queries


def prompts_for(label: str, category: str | None = None) -> list[str]:
    """The prompt ensemble for a part name, optionally with its object category."""
    part = clean_label(label)
    if category:
        obj = clean_label(category)
        return [t.format(part, obj) for t in PART_OF_OBJECT_TEMPLATES]
    return [t.format(part) for t in PART_TEMPLATES]
