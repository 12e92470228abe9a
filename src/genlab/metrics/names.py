"""The sample metrics ``scores.score`` computes and the keys it returns for each.

A declaration without torch: ``callbacks.fid`` logs these keys as ``val/<key>`` and
``test/<key>``, ``train.py`` checks ``model.monitor`` against them, and the sweep summary picks
its columns from them without importing the scoring code. docs/evaluation.md lists the same.
"""

from __future__ import annotations

from collections.abc import Iterable

# Metric name -> the numbers `score` returns for it. Not listed: coverage's class_counts, a
# list, which is reported but never logged.
SCORE_KEYS: dict[str, tuple[str, ...]] = {
    "fid": ("fid",),
    "kid": ("kid", "kid_std"),
    "is": ("is", "is_std"),
    "pr": ("precision", "recall"),
    "coverage": ("class_kl", "classes_covered"),
}
# The names `score` (and eval.py's `metrics=[...]`) accepts.
SAMPLE_METRICS = tuple(SCORE_KEYS)
# The keys that qualify a score rather than rank samples: a spread over subsets or splits, a
# count of classes.
DETAIL_KEYS = frozenset({"kid_std", "is_std", "classes_covered"})


def score_keys(metrics: Iterable[str], details: bool = True) -> list[str]:
    """The keys ``score`` returns for ``metrics`` (unknown names give none); ``details=False``:
    only the scores that rank samples (``DETAIL_KEYS`` left out)."""
    keys = (key for metric in metrics for key in SCORE_KEYS.get(metric, ()))
    return [key for key in keys if details or key not in DETAIL_KEYS]
