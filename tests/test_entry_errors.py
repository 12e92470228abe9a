"""The entry points' boundary: a misspelt key, Ctrl-C, an impossible sample count and a
file-size limit each end in one line on stderr, not a traceback."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from genlab.config.cli import closest_keys, exit_on_user_error, unknown_keys_as_one_line
from genlab.errors import ConfigError
from tests.conftest import CONF, ROOT, run_script

pytestmark = pytest.mark.filterwarnings("ignore")
PRETRAINED = ROOT / "pretrained" / "default.ckpt"


def _one_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


# --- a misspelt key ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("script", "args", "key", "meant"),
    [
        ("train.py", ["model.lattent_dim=8"], "model.lattent_dim", "model.latent_dim"),
        ("train.py", ["model=vae", "model.lr=0.1"], "model.lr", "model.optimizer.lr"),
        ("train.py", ["-m", "model.genrator.width=8,16"], "model.genrator", "model.generator"),
        ("eval.py", ["metrcs=[fid]"], "metrcs", "metrics"),
        ("sample.py", [f"ckpt_path={PRETRAINED}", "nn=3"], "nn", "n"),
    ],
)
def test_misspelt_key_names_the_closest_keys(
    script: str, args: list[str], key: str, meant: str, tmp_path: Path
) -> None:
    result = run_script(script, *args, f"hydra.run.dir={tmp_path}", f"hydra.sweep.dir={tmp_path}")
    assert result.returncode == 1
    assert _one_line(result) == (
        f"genlab: error: {key} is not a key of the config; did you mean {meant}? "
        f"(python {script} --cfg job lists every key)"
    )
    # Refused before a job started (a multirun has written its multirun.yaml).
    assert {p.name for p in tmp_path.iterdir()} <= {"multirun.yaml"}


def test_other_hydra_errors_keep_hydras_report(tmp_path: Path) -> None:
    """A group typo lists the choices, as Hydra prints it."""
    result = run_script("train.py", "model=vea", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 1
    assert "Could not find 'model/vea'" in result.stderr and "\tvae" in result.stderr
    assert "Traceback" not in result.stderr and "genlab: error" not in result.stderr
    assert result.stderr.rstrip().endswith("HYDRA_FULL_ERROR=1 for a complete stack trace.")


def test_closest_keys() -> None:
    keys = ["seed", "model", "model.latent_dim", "model.optimizer", "model.optimizer.lr",
            "model.loss", "model.generator", "model.generator.latent_dim"]  # fmt: skip
    assert closest_keys("model.lattent_dim", keys) == ["model.latent_dim"]  # beside it first
    assert closest_keys("model.lr", keys) == ["model.optimizer.lr"]  # the same name, deeper
    assert closest_keys("sed", keys) == ["seed"]
    assert closest_keys("metrcs", ["metrics", "extras", "seed"]) == ["metrics"]  # nearest only
    assert closest_keys("nn", ["n", "out", "seed"]) == ["n"]
    assert closest_keys("model.zzz", keys) == []


def test_hydra_raises_only_until_the_job_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """HYDRA_FULL_ERROR is set while Hydra composes and gone once the job runs (its errors,
    its DDP ranks and workers see the user's environment); a user's own value is left alone."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with unknown_keys_as_one_line(CONF, "train"):
        assert os.environ["HYDRA_FULL_ERROR"] == "1"
        with exit_on_user_error():
            assert "HYDRA_FULL_ERROR" not in os.environ
    assert "HYDRA_FULL_ERROR" not in os.environ
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    with unknown_keys_as_one_line(CONF, "train"), exit_on_user_error():
        assert os.environ["HYDRA_FULL_ERROR"] == "0"
    assert os.environ["HYDRA_FULL_ERROR"] == "0"


# --- Ctrl-C -----------------------------------------------------------------------------
def test_ctrl_c_is_one_line_and_status_130(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as stop, exit_on_user_error():
        raise KeyboardInterrupt
    assert stop.value.code == 130
    assert capsys.readouterr().err.splitlines() == [
        "genlab: interrupted (Ctrl-C) before the end: run the command again to redo it."
    ]


@pytest.mark.parametrize(
    ("script", "args"),
    [
        ("sample.py", ["n=200000", "batch_size=100"]),
        ("eval.py", ["metrics=[fid]", "num_samples=200000", "batch_size=100"]),
    ],
)
def test_ctrl_c_in_a_real_run(script: str, args: list[str], tmp_path: Path) -> None:
    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, str(ROOT / script), f"ckpt_path={PRETRAINED}", "device=cpu",
         f"out={tmp_path / 's.npy'}", *args, f"hydra.run.dir={out}"]
        if script == "sample.py"
        else [sys.executable, str(ROOT / script), f"ckpt_path={PRETRAINED}", "trainer=cpu",
              *args, f"hydra.run.dir={out}"],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        # A terminal's Ctrl-C, even when the suite itself runs as a background job (`pytest &`),
        # whose children inherit SIGINT ignored and would sample on to the end.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not (out / ".hydra" / "config.yaml").exists():  # Hydra is about to start the job
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.1)
    time.sleep(1.0)  # inside the job now: loading the checkpoint or sampling
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("genlab: interrupted (Ctrl-C)")
    assert not (tmp_path / "s.npy").exists()


# --- n too large for the machine ----------------------------------------------------------
def test_sample_count_too_large_is_refused_before_sampling(tmp_path: Path) -> None:
    start = time.monotonic()
    result = run_script(
        "sample.py",
        f"ckpt_path={PRETRAINED}",
        "n=1000000000",
        "device=cpu",
        f"out={tmp_path / 's.npy'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert result.returncode == 1
    line = _one_line(result)
    assert line.startswith("genlab: error: n=1000000000 samples of 1x28x28 need about ")
    assert "TB of memory" in line and "3.1 TB of float32 pixels" in line and "lower n" in line
    assert time.monotonic() - start < 120  # refused, not drawn until the allocator gave up


def test_size_check_against_memory_disk_and_file_limit(monkeypatch, tmp_path: Path) -> None:
    import genlab.sample as sample

    one = 3 * 8 * 8 * 4  # bytes per float32 image of 3x8x8
    out = tmp_path / "new" / "s.npy"  # its folder does not exist yet: the disk is tmp_path's
    monkeypatch.setattr(sample, "_available_memory", lambda: 2 * 100 * one)
    sample.check_size(100, (3, 8, 8), 0, out, "n=100")  # twice the pixels: just fits
    with pytest.raises(
        ConfigError, match=r"^n=101 samples of 3x8x8 need about 155.1 kB .* \(77.6 kB of float32"
    ):
        sample.check_size(101, (3, 8, 8), 0, out, "n=101")
    with pytest.raises(ConfigError, match="need about"):  # the latents count too
        sample.check_size(100, (3, 8, 8), 1, out, "n=100")
    with pytest.raises(ConfigError, match=r"as \.png"):  # the grid: padded, RGB, twice
        sample.check_size(100, (3, 8, 8), 0, out.with_suffix(".png"), "n=100")

    monkeypatch.setattr(sample, "_available_memory", lambda: None)  # not Linux: not checked
    monkeypatch.setattr(sample, "file_size_limit", lambda: 100 * one - 1)
    with pytest.raises(ConfigError, match=r"may write files of 76\.8 kB at most"):
        sample.check_size(100, (3, 8, 8), 0, out, "n=100")
    sample.check_size(100, (3, 8, 8), 0, out.with_suffix(".png"), "n=100")  # size unknown

    free = type("Usage", (), {"free": 100 * one - 1})()
    monkeypatch.setattr(sample.shutil, "disk_usage", lambda folder: free)
    with pytest.raises(ConfigError, match=f"but {re.escape(str(tmp_path))} has 76.8 kB free"):
        sample.check_size(100, (3, 8, 8), 0, out, "n=100")


def test_available_memory_is_read_on_linux() -> None:
    import genlab.sample as sample

    if not Path("/proc/meminfo").exists():
        pytest.skip("not Linux")
    available = sample._available_memory()
    assert available is not None and 0 < available <= os.sysconf("SC_PHYS_PAGES") * os.sysconf(
        "SC_PAGE_SIZE"
    )


def test_sample_run_refuses_before_drawing(monkeypatch, tmp_path: Path) -> None:
    import genlab.sample as sample

    monkeypatch.setattr(sample, "_available_memory", lambda: 10**6)  # 1 MB: ~159 MNIST images
    monkeypatch.setattr(sample, "draw", lambda *a, **k: pytest.fail("drew samples"))
    cfg = {"ckpt_path": str(PRETRAINED), "n": 200, "seed": 0, "batch_size": 50}
    with pytest.raises(ConfigError, match="n=200 samples of 1x28x28"):
        sample.run(OmegaConf.create({**cfg, "device": "cpu", "out": str(tmp_path / "s.npy")}))
    interpolate = {**cfg, "n": 20, "mode": "interpolate", "steps": 10, "device": "cpu"}
    with pytest.raises(ConfigError, match="n=20 x steps=10 samples"):
        sample.run(OmegaConf.create({**interpolate, "out": str(tmp_path / "w.png")}))


# --- a file-size limit (ulimit -f) ------------------------------------------------------
# In a child: the limit is per process, and the suite must not inherit it.
CHILD = """
import resource, signal, sys
from pathlib import Path
from genlab.utils.atomic import atomic_path
from genlab.config.cli import exit_on_user_error

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG, not death by SIGXFSZ
resource.setrlimit(resource.RLIMIT_FSIZE, (1024, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
with exit_on_user_error(), atomic_path(Path(sys.argv[1])) as tmp:
    tmp.write_bytes(b"x" * 4096)
"""


def test_file_size_limit_is_one_line(tmp_path: Path) -> None:
    out = tmp_path / "metrics.csv"
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(out)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert _one_line(result) == (
        "genlab: error: cannot write a file: the file would pass this process's file-size "
        "limit of 1024 bytes: raise it (ulimit -f unlimited, or ask the cluster's admins for "
        "more)."
    )
    assert list(tmp_path.iterdir()) == []  # atomic_path removed its partial temporary


def test_sample_file_over_the_file_size_limit_is_refused_upfront(tmp_path: Path) -> None:
    resource = pytest.importorskip("resource")

    def limit() -> None:  # in the child, before sample.py starts
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.setrlimit(resource.RLIMIT_FSIZE, (64_000, hard))

    result = subprocess.run(
        [sys.executable, str(ROOT / "sample.py"), f"ckpt_path={PRETRAINED}", "n=64",
         "device=cpu", f"out={tmp_path / 's.npy'}", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, preexec_fn=limit,
    )  # fmt: skip
    assert result.returncode == 1
    assert _one_line(result) == (
        "genlab: error: n=64 samples of 1x28x28 make a 200.7 kB .npy file, but this process "
        "may write files of 64.0 kB at most: raise the limit (ulimit -f unlimited) or lower n."
    )
