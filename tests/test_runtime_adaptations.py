"""Runtime adaptations act on the objects built, never on the stored config.

``logger=wandb`` asked online on a machine without W&B credentials logs offline, but the
config in every checkpoint keeps saying online: a resume (on a machine with network) asks again
rather than inheriting a decision made for another machine.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from genlab.checkpoints.keys import CONFIG_KEY, WANDB_ID_KEY
from genlab.train import run


def _stored(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


@pytest.fixture
def no_wandb_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A machine where online W&B cannot start: no key, no netrc entry, and a server address
    where nothing listens (so even a broken fallback never reaches the real service)."""
    # The conftest sets WANDB_MODE=offline, which the logger config reads
    # (mode: ${oc.env:WANDB_MODE,online}); it must not be what makes this run offline.
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))  # no ~/.netrc, no ~/.config/wandb/settings
    empty_netrc = tmp_path / "netrc"
    empty_netrc.write_text("")
    monkeypatch.setenv("NETRC", str(empty_netrc))
    monkeypatch.delenv("WANDB_CONFIG_DIR", raising=False)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")


def test_offline_fallback_stays_out_of_the_stored_config_and_resume(
    make_cfg, no_wandb_credentials, caplog
) -> None:
    cfg = make_cfg(
        "model=vae",
        "logger=wandb",
        "logger.wandb.mode=online",
        "debug=limit",
        "++trainer.limit_train_batches=4",
        "++trainer.limit_val_batches=1",
        "test=false",
        "callbacks.fid=null",  # the VAE monitors val/elbo; FID would only cost time here
        # Stop after the second batch of epoch 0, as SLURM's SIGTERM would: resume= has work left.
        "+callbacks.sigterm._target_=tests.fault_injection.SignalAt",
        "+callbacks.sigterm.epoch=0",
        "+callbacks.sigterm.batch=1",
    )
    run_dir = Path(cfg.paths.output_dir)
    with caplog.at_level(logging.WARNING, logger="genlab"), pytest.raises(SystemExit) as stop:
        run(cfg)
    assert stop.value.code == 143

    fallbacks = [r.getMessage() for r in caplog.records if "logging offline" in r.getMessage()]
    assert len(fallbacks) == 1, fallbacks
    # The run logged offline (W&B names online runs run-*, offline ones offline-run-*) ...
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    assert not list((run_dir / "wandb").glob("run-*"))
    # ... while the checkpoint keeps what the user asked for.
    first = _stored(run_dir)
    assert first[CONFIG_KEY]["logger"]["wandb"]["mode"] == "online"
    assert first[CONFIG_KEY]["logger"]["wandb"]["id"] is None  # the run id lives beside it
    run_id = offline.name.rsplit("-", 1)[1]
    assert first[WANDB_ID_KEY] == run_id
    first_epoch = first["epoch"]

    # python train.py resume=<run dir>: the command's own groups do not matter (csv logger).
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="genlab"):
        run(make_cfg(f"resume={run_dir}"))

    # Asked again from the stored "online", and still no credentials: offline again, and the
    # same W&B run continued.
    fallbacks = [r.getMessage() for r in caplog.records if "logging offline" in r.getMessage()]
    assert len(fallbacks) == 1, fallbacks
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    # offline-run-<time>-<id>, with "-1" appended when both lives started in the same second
    ids = {r.name.split("-")[3] for r in runs}
    assert len(runs) == 2 and ids == {run_id}, runs
    assert not list((run_dir / "wandb").glob("run-*"))
    resumed = _stored(run_dir)
    assert resumed["epoch"] > first_epoch  # a new checkpoint, written by the resumed run
    stored = resumed[CONFIG_KEY]
    assert stored["logger"]["wandb"]["mode"] == "online"
    assert stored["logger"]["wandb"]["id"] is None
    assert stored["resume"] is None and stored["ckpt_path"].endswith("last.ckpt")


def test_continued_wandb_run_id_stays_out_of_the_stored_config(make_cfg, tmp_path: Path) -> None:
    """``train.py ckpt_path=<ckpt> logger=wandb`` (a composed, struct-mode config) continues the
    checkpoint's W&B run; the id and ``resume`` set on the logger reach neither the command's
    config nor the new checkpoints."""
    short = ["model=vae", "callbacks.fid=null", "debug=limit", "test=false"]
    first = make_cfg("logger=wandb", *short, "trainer.max_epochs=1")
    run(first)
    first_dir = Path(first.paths.output_dir)
    (offline,) = (first_dir / "wandb").glob("offline-run-*")
    run_id = offline.name.rsplit("-", 1)[1]

    second = make_cfg(
        "logger=wandb",
        *short,
        "trainer.max_epochs=2",  # one more epoch, so the continued run writes a checkpoint
        f"ckpt_path={first_dir / 'checkpoints' / 'last.ckpt'}",
    )
    second.paths.output_dir = str(tmp_path / "continued")
    run(second)
    (continued,) = (tmp_path / "continued" / "wandb").glob("offline-run-*")
    assert continued.name.rsplit("-", 1)[1] == run_id  # the same W&B run
    assert second.logger.wandb.id is None and "resume" not in second.logger.wandb
    stored = _stored(tmp_path / "continued")
    assert stored["epoch"] == 1  # written by the continued run
    assert stored[WANDB_ID_KEY] == run_id
    assert stored[CONFIG_KEY]["logger"]["wandb"]["id"] is None
    assert "resume" not in stored[CONFIG_KEY]["logger"]["wandb"]
