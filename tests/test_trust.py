"""A checkpoint is data: a hostile stored config is refused by every entry point before anything
is built from it, and no side effect of its payload happens (docs/security.md)."""

from __future__ import annotations

import copy
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from genlab.checkpoints.build import build_model
from genlab.checkpoints.io import AtomicCheckpointIO
from genlab.checkpoints.load import load_model, read_checkpoint
from genlab.checkpoints.pretrained import resolve_checkpoint, sha256, write_sums
from genlab.checkpoints.trust import UntrustedCheckpoint, check_stored_config, vouched
from genlab.errors import CheckpointError
from genlab.privacy import DifferentialPrivacy
from tests.conftest import JOB_TINY, run_script

CONFIG = "genlab_config"


@pytest.fixture(scope="module")
def good_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real tiny training run (a GAN, 1 short epoch): its folder and checkpoints."""
    run = tmp_path_factory.mktemp("trusted") / "run"
    result = run_script("train.py", *JOB_TINY, "test=false", f"hydra.run.dir={run}")
    assert result.returncode == 0, result.stderr[-2000:]
    return run


def _tamper(source: Path, dest: Path, edit) -> Path:
    checkpoint = torch.load(source, weights_only=True)
    edit(checkpoint[CONFIG])
    dest.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, dest)
    return dest


def _writes(marker: Path) -> dict:
    """A payload that writes ``marker`` (.npy) if anything ever calls it."""
    return {"_target_": "numpy.save", "file": str(marker), "arr": [1]}


# Where a payload can hide in a stored config, and the key the refusal must name.
def _in_net_width(c, m):
    c["model"]["generator"]["width"] = _writes(m)


def _in_list(c, m):
    c["model"]["optimizer"]["betas"] = [_writes(m), 0.99]


def _as_partial(c, m):
    c["model"]["optimizer"] = {**_writes(m), "_partial_": True}


def _in_args(c, m):
    c["model"]["generator"]["width"] = {"_target_": "builtins.print", "_args_": [_writes(m)]}


def _in_data(c, m):
    c["data"]["batch_size"] = _writes(m)


def _chain(c, m):
    # Write a Python file, then run it: each step alone looks like plain file handling.
    script = m.with_suffix(".py")
    c["model"]["latent_dim"] = {
        "_target_": "runpy.run_path",
        "path_name": {
            "_target_": "shutil.copyfile",
            "src": str(m.parent / "payload.py"),
            "dst": str(script),
        },
    }


HOSTILE = {
    "net width": (_in_net_width, "model.generator.width._target_"),
    "list item": (_in_list, "model.optimizer.betas[0]._target_"),
    "partial": (_as_partial, "model.optimizer._target_"),
    "positional args": (_in_args, "model.generator.width._target_"),
    "data module value": (_in_data, "data.batch_size._target_"),
    "write then run": (_chain, "model.latent_dim._target_"),
}


def _payload_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "payload"
    folder.mkdir(exist_ok=True)
    marker = folder / "pwned.npy"
    (folder / "payload.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    return folder


def _no_side_effect(folder: Path) -> None:
    assert sorted(p.name for p in folder.iterdir()) == ["payload.py"], "the payload ran"


@pytest.mark.parametrize("case", list(HOSTILE))
def test_load_model_refuses_hostile_targets(good_run: Path, tmp_path: Path, case: str) -> None:
    edit, key = HOSTILE[case]
    folder = _payload_dir(tmp_path)
    path = _tamper(
        good_run / "checkpoints" / "last.ckpt",
        tmp_path / "bad.ckpt",
        lambda c: edit(c, folder / "pwned.npy"),
    )
    with pytest.raises(UntrustedCheckpoint) as err:
        load_model(path)
    message = str(err.value)
    assert key in message and "trust_checkpoint=true" in message and "\n" not in message
    _no_side_effect(folder)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("${oc.env:HOME}", "interpolation"),
        ("64", "needs int"),  # plain data, but not the type GAN's latent_dim takes
        (torch.zeros(2), "Tensor"),
        ({1: 2}, "not a string"),
        ({"_foo_": 1}, "Hydra key"),
    ],
)
def test_stored_values_must_be_plain_data_of_the_right_type(
    good_run: Path, value: object, says: str
) -> None:
    config = copy.deepcopy(read_checkpoint(good_run / "checkpoints" / "last.ckpt")[CONFIG])
    config["model"]["latent_dim"] = value
    with pytest.raises(UntrustedCheckpoint, match=says):
        check_stored_config(config, "x.ckpt")
    check_stored_config(config, "x.ckpt", trust=True)  # the opt-in checks nothing


def test_what_is_vouched_for() -> None:
    # The local conf/ (a researcher's my_models included), genlab's and torch's classes...
    for target in ("genlab.models.gan.GAN", "my_models.mlp_vae.MLPVAE", "torch.optim.SGD"):
        assert vouched(target), target
    assert vouched("torch.optim.lr_scheduler.StepLR") and vouched("torch.nn.LeakyReLU")
    assert vouched("tests.fault_injection.SignalAt")  # a class of the project's own packages
    # ...but not what those modules import, functions, or anything else.
    for target in (
        "genlab.utils.atomic.os.system",
        "genlab.checkpoints.load.torch.load",
        "torch.nn.functional.relu",
        "torch.load",
        "numpy.save",
        "builtins.exec",
        "genlab.resolvers.run_dir",
        "train.DictConfig",  # imported by the project's train.py, not its own
        "genlab.models.gan.GAN; import os",
    ):
        assert not vouched(target), target


def test_trust_opt_in_builds_what_it_names(good_run: Path, tmp_path: Path) -> None:
    """trust=True is an explicit choice to run the stored config as it is."""
    marker = tmp_path / "ran.npy"

    def edit(config: dict) -> None:
        config["model"]["generator"]["extra"] = _writes(marker)

    path = _tamper(good_run / "checkpoints" / "last.ckpt", tmp_path / "x.ckpt", edit)
    # Built, then the net refuses the unknown argument: a config of other code, one line.
    with pytest.raises(CheckpointError, match="written by a different version of the code"):
        load_model(path, trust=True)
    assert marker.is_file()


def test_build_model_prepares_a_private_model_as_training_did(make_cfg) -> None:
    """train.py and load_model build through build_model: with privacy.enabled the private
    nets are rebuilt (BatchNorm -> GroupNorm) before any weights are loaded, so the weights of a
    DP run fit the model load_model builds."""
    plain, privacy = build_model(make_cfg("model=dcgan"))
    assert privacy is None
    private, privacy = build_model(make_cfg("model=dcgan", "privacy.enabled=true"))
    assert isinstance(privacy, DifferentialPrivacy)

    def norms(model: torch.nn.Module) -> set[str]:
        return {
            type(m).__name__ for m in model.discriminator.modules() if "Norm" in type(m).__name__
        }

    assert "BatchNorm2d" in norms(plain)
    assert norms(private) == {"GroupNorm"}
    # The generator never sees real images: it is left as it was.
    assert plain.generator.state_dict().keys() == private.generator.state_dict().keys()


def _hostile_copy(good_run: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the run whose last.ckpt hides a payload in a net width; the payload folder."""
    folder = _payload_dir(tmp_path)
    run = tmp_path / "shared run"  # a space: hints must still be valid shell
    shutil.copytree(good_run, run)
    _tamper(
        good_run / "checkpoints" / "last.ckpt",
        run / "checkpoints" / "last.ckpt",
        lambda c: _in_net_width(c, folder / "pwned.npy"),
    )
    return run, folder


def _refused(result, key: str = "model.generator.width._target_") -> None:
    assert result.returncode == 1, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("genlab: error:")]
    assert len(errors) == 1 and key in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_every_entry_point_refuses_a_hostile_checkpoint(good_run: Path, tmp_path: Path) -> None:
    run, folder = _hostile_copy(good_run, tmp_path)
    ckpt = run / "checkpoints" / "last.ckpt"
    out = tmp_path / "out"
    _refused(run_script("sample.py", f"ckpt_path='{ckpt}'", f"out={out / 's.png'}"))
    _refused(run_script("eval.py", f"ckpt_path='{ckpt}'", "metrics=[fid]", "num_samples=10"))
    before = (run / "checkpoints" / "last.ckpt").read_bytes()
    _refused(run_script("train.py", f"resume='{run}'", "trainer.max_epochs=2"))
    # The tampered config was not copied into new checkpoints: none was written.
    assert (run / "checkpoints" / "last.ckpt").read_bytes() == before
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == sorted(
        p.name for p in (good_run / "checkpoints").iterdir()
    )
    # A pretrained folder that brings its own SHA256SUMS vouches for nothing.
    shipped = tmp_path / "pretrained"
    shipped.mkdir()
    shutil.copy(ckpt, shipped / "evil.ckpt")
    write_sums({"evil": sha256(shipped / "evil.ckpt")}, shipped)
    env = {"GENLAB_PRETRAINED_DIR": str(shipped)}
    os.environ.update(env)
    try:
        _refused(run_script("sample.py", "ckpt_path=pretrained:evil", f"out={out / 'p.png'}"))
    finally:
        os.environ.pop("GENLAB_PRETRAINED_DIR")
    # The export script refuses before it writes anything (no fresh SHA256 line for it).
    exported = tmp_path / "exported"
    result = run_script(
        "scripts/export_pretrained.py",
        str(ckpt),
        "evil",
        "--folder",
        str(exported),
        "--command",
        "python train.py",
        "--minutes",
        "1",
    )
    _refused(result)
    assert not exported.exists() or not any(exported.iterdir())
    assert not out.exists() or not any(out.iterdir())
    _no_side_effect(folder)


def test_resume_never_follows_a_stored_path_outside_the_run(good_run: Path, tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    outside = tmp_path / "outside"

    def edit(config: dict) -> None:
        config["callbacks"]["sample_grid"]["dirpath"] = str(outside)

    _tamper(good_run / "checkpoints" / "last.ckpt", run / "checkpoints" / "last.ckpt", edit)
    result = run_script("train.py", f"resume={run}", "trainer.max_epochs=2")
    _refused(result, "callbacks.sample_grid.dirpath")
    assert not outside.exists()


def test_resume_records_the_config_that_ran_and_warns_of_hand_edits(
    good_run: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    stored = (run / ".hydra" / "config.yaml").read_text()
    (run / ".hydra" / "config.yaml").write_text(stored.replace("max_epochs: 1", "max_epochs: 7"))
    result = run_script("train.py", f"resume={run}", "trainer.max_epochs=2", "test=false")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "config.yaml was changed after the run started" in result.stdout + result.stderr
    (record,) = (run / ".hydra").glob("resumed_*/config.yaml")
    text = record.read_text()
    assert "max_epochs: 2" in text and "width: 8" in text  # the run's nets, not the defaults


def test_a_link_to_a_changed_pretrained_file_is_checked(
    good_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = tmp_path / "pretrained"
    shipped.mkdir()
    shutil.copy(good_run / "checkpoints" / "last.ckpt", shipped / "model.ckpt")
    write_sums({"model": sha256(shipped / "model.ckpt")}, shipped)
    monkeypatch.setenv("GENLAB_PRETRAINED_DIR", str(shipped))
    link = tmp_path / "elsewhere" / "innocent.ckpt"
    link.parent.mkdir()
    link.symlink_to(shipped / "model.ckpt")
    assert resolve_checkpoint(link) == link  # intact: passes
    with open(shipped / "model.ckpt", "ab") as f:
        f.write(b"changed")
    with pytest.raises(CheckpointError, match="does not match its SHA256"):
        resolve_checkpoint(link)
    # And a shipped name that is a link to a changed file elsewhere.
    (shipped / "model.ckpt").rename(tmp_path / "moved.ckpt")
    (shipped / "model.ckpt").symlink_to(tmp_path / "moved.ckpt")
    with pytest.raises(CheckpointError, match="does not match its SHA256"):
        resolve_checkpoint(shipped / "model.ckpt")


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_lightning_reads_checkpoints_weights_only(tmp_path: Path) -> None:
    """Resume and test(ckpt_path=...) read through AtomicCheckpointIO: a pickled object in a
    checkpoint is refused there too, not only by genlab's own reader."""
    marker = tmp_path / "pwned"
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {}, "x": _Payload(marker)}, path)
    with pytest.raises(pickle.UnpicklingError):
        AtomicCheckpointIO().load_checkpoint(path)
    assert not marker.exists()
    torch.save({"state_dict": {"w": torch.ones(2)}}, path)
    assert AtomicCheckpointIO().load_checkpoint(path)["state_dict"]["w"].sum() == 2


def test_eval_uses_this_machines_data_folder(good_run: Path, tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from genlab.evaluate import _data_config

    _, train_cfg = load_model(good_run / "checkpoints" / "last.ckpt")
    train_cfg.data.data_dir = str(tmp_path / "someone else's folder")
    (tmp_path / "someone else's folder").mkdir()
    cfg = OmegaConf.create({"data": None, "paths": {"data_dir": "/local/data"}})
    assert _data_config(cfg, train_cfg, {})["data_dir"] == "/local/data"


def test_a_copied_run_folder_resumes_with_its_best_checkpoint(good_run: Path, tmp_path: Path):
    """Callback states name the run's files: in a copy they are moved to the copy, so the
    best score carries over (Lightning would otherwise reset it and call the next epoch best)."""
    import csv
    import json

    run = tmp_path / "copy"
    shutil.copytree(good_run, run)
    result = run_script("train.py", f"resume={run}", "trainer.max_epochs=3", "test=false")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "dirpath has changed" not in result.stdout + result.stderr  # the states were reloaded
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    fids = {int(r["epoch"]): float(r["val/fid"]) for r in rows if r.get("val/fid")}
    assert sorted(fids) == [0, 1, 2]
    best_epoch = min(fids, key=fids.get)
    outcome = json.loads((run / "result.json").read_text())
    assert outcome["best_score"] == pytest.approx(fids[best_epoch], rel=1e-5)
    assert outcome["best_model_path"] == str(run / "checkpoints" / f"epoch{best_epoch:03d}.ckpt")


def test_a_callback_state_path_outside_the_run_is_refused(good_run: Path, tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    path = run / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(path, weights_only=True)
    for state in checkpoint["callbacks"].values():
        if "best_model_path" in state:
            state["best_model_path"] = str(tmp_path / "elsewhere" / "other.ckpt")
    torch.save(checkpoint, path)
    result = run_script("train.py", f"resume={run}", "trainer.max_epochs=2")
    _refused(result, "callback states name")
