"""Every entry genlab adds to a Lightning checkpoint, in one table.

Lightning's own entries (``state_dict``, ``loops``, ``callbacks``, ...) carry the weights and
the loop state; a callback's own state goes through its ``state_dict`` and needs no key here.
What a feature adds at the top level of the checkpoint dict is named below and nowhere else
(``tests/test_architecture.py`` checks it), so a reader sees in one place what a ``.ckpt``
holds and a new feature cannot silently reuse another's key.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

# The run's resolved config: sample.py, eval.py and resume=<run> rebuild the run from it.
CONFIG_KEY = "genlab_config"
# SHA256 of the run's .hydra/config.yaml as it started: a resume warns about hand edits there.
CONFIG_FILE_KEY = "genlab_config_file_sha256"
# The W&B run the checkpoint belongs to, so a resume continues it.
WANDB_ID_KEY = "wandb_run_id"
# The training batches metrics.csv has rows for, and the callback metrics at the save, so a
# resumed run's metrics.csv and monitor equal an uninterrupted run's.
STEP_KEY = "genlab_step"
METRICS_KEY = "genlab_callback_metrics"
# Saved just before a validation that a stop interrupted: the resume repeats it.
VALIDATION_PENDING_KEY = "genlab_validation_pending"
# The latest value of each metric a model computes on only some batches (log_latest).
LATEST_METRICS_KEY = "genlab_latest_metrics"

KEYS: dict[str, str] = {
    CONFIG_KEY: "the run's resolved config",
    CONFIG_FILE_KEY: "SHA256 of .hydra/config.yaml at the start",
    WANDB_ID_KEY: "the W&B run id",
    STEP_KEY: "training batches metrics.csv records",
    METRICS_KEY: "callback metrics at the save",
    VALIDATION_PENDING_KEY: "a stopped validation to repeat",
    LATEST_METRICS_KEY: "latest values of sparsely computed metrics",
}


def config_file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
