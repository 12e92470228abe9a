"""Entry point: `python train.py [overrides]`. The work is in `genlab.train.run`."""

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
