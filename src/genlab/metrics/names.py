"""The sample metrics ``scores.score`` computes and the keys it returns for each; the
class-conditional metrics ``conditional.conditional_score`` computes and theirs.

A declaration without torch: ``callbacks.fid`` logs these keys as ``val/<key>`` and
``test/<key>``, ``train.py`` checks ``model.monitor`` against them, and the sweep summary picks
its columns from them without importing the scoring code. ``eval.py`` writes both kinds as
``test/<key>``. docs/evaluation.md lists the same.
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


# Class-conditional metrics (metrics/conditional.py), for models with num_classes > 0 only:
# metric name -> the keys `conditional_score` returns, each the mean over the model's classes;
# beside each, one key per class c, `class_key(key, c)` ("intra_fid/3"). eval.py's
# `metrics=[...]` accepts these names too; the FID callback and the sweep table do not use them.
CONDITIONAL_KEYS: dict[str, tuple[str, ...]] = {
    "cond_acc": ("cond_acc",),
    "intra_fid": ("intra_fid",),
    "class_pr": ("class_precision", "class_recall"),
}
CONDITIONAL_METRICS = tuple(CONDITIONAL_KEYS)


def class_key(key: str, label: int) -> str:
    """The key of class ``label``'s own value of ``key``: ``intra_fid/3``."""
    return f"{key}/{label}"


def conditional_keys(metrics: Iterable[str], num_classes: int) -> list[str]:
    """The keys ``conditional_score`` returns for ``metrics`` on a model of ``num_classes``
    classes (unknown names give none): each mean key, then its per-class keys."""
    return [
        name
        for metric in metrics
        for key in CONDITIONAL_KEYS.get(metric, ())
        for name in (key, *(class_key(key, c) for c in range(num_classes)))
    ]
