"""Classes that moved since older checkpoints were written: their stored configs still name
the old place. Renamed before the trust check, so a shipped or older checkpoint loads and
resumes; only exact old names are mapped, each to a class this installation defines."""

from __future__ import annotations

from typing import Any

MOVED_TARGETS: dict[str, str] = {
    "genlab.loggers.ResumableCSVLogger": "genlab.loggers.metrics_csv.ResumableCSVLogger",
    "genlab.callbacks.privacy.DifferentialPrivacy": "genlab.privacy.DifferentialPrivacy",
    "genlab.utils.run_dir.CheckRunDir": "genlab.resume.run_dir.CheckRunDir",
}


def renamed_targets(node: Any) -> Any:
    """``node`` (a stored config as plain dicts and lists) with moved ``_target_``s renamed."""
    if isinstance(node, dict):
        return {
            key: MOVED_TARGETS.get(value, value)
            if key == "_target_" and isinstance(value, str)
            else renamed_targets(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [renamed_targets(item) for item in node]
    return node
