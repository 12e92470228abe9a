"""trainer=ddp_cpu: two gloo processes fit, validate and test a GAN and a VAE end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY, TINY_NETS, run_script


@pytest.mark.parametrize("model", ["gan", "vae"])
def test_two_process_cpu_ddp_fits_and_tests(model: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    tiny = [o for o in TINY if o != "trainer=cpu"]
    proc = run_script(
        "train.py",
        f"model={model}",
        "trainer=ddp_cpu",
        "debug=limit",
        *tiny,
        *TINY_NETS[model],
        f"hydra.run.dir={run_dir}",
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "MEMBER: 2/2" in output, "rank 1 never joined"
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "ok"
    # Logged on both ranks and reduced: the test metrics are real numbers.
    key = "test/fid" if model == "gan" else "test/nll_nats"
    assert torch.isfinite(torch.tensor(result["metrics"][key]))
    # Rank 0 alone writes checkpoints and samples; the checkpoint holds the trained weights.
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] > 0
    assert (run_dir / "samples" / "samples_last.png").is_file()
