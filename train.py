"""Entry point: `python train.py [overrides]`. The work is in `genlab.train.run`."""

import os
import signal

# A SLURM job's time-limit warning (USR1/USR2) can come while torch is still importing; its
# default action would kill the job with no checkpoint and no requeue. Note it instead: the
# training stops after its first batch and requeues (genlab/resume/slurm.py, WARNED_ENV).


def _note_warning(signum, frame):
    os.environ["GENLAB_SLURM_WARNED"] = signal.Signals(signum).name


if os.environ.get("SLURM_JOB_ID"):
    for _warning in (signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(_warning, _note_warning)

from pathlib import Path

import hydra
from omegaconf import DictConfig

import genlab  # noqa: F401  (registers the config resolvers)
from genlab.config.cli import exit_if_plugin_missing, exit_on_user_error, unknown_keys_as_one_line
from genlab.train import run


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig):
    with exit_on_user_error():
        return run(cfg)


if __name__ == "__main__":
    # Before Hydra composes: a sweeper/launcher without its extra is one line, not a traceback.
    exit_if_plugin_missing(Path(__file__).parent / "conf", "train")
    with unknown_keys_as_one_line(Path(__file__).parent / "conf", "train"):  # model.lattent_dim=8
        main()
