"""scripts/model_zoo.py: the model zoo table (docs/models.md) is built from the runs' own test metrics."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("model_zoo", ROOT / "scripts" / "model_zoo.py")
zoo = importlib.util.module_from_spec(spec)
spec.loader.exec_module(zoo)


def test_table_reads_test_metrics_and_wall_time(tmp_path: Path) -> None:
    run = tmp_path / "vae"
    run.mkdir()
    (run / "metrics.csv").write_text(
        "epoch,step,val/fid,test/fid,test/class_kl,test/classes_covered,test/nll_nats\n"
        "0,10,30.5,,,,\n"
        "1,20,20.25,,,,\n"
        "1,20,,19.5,0.1234,10,95.5\n"
    )
    command = f"train.py experiment=vae_mnist trainer.max_epochs=2 hydra.run.dir={run}"
    (run / "zoo.json").write_text(json.dumps({"command": command, "seconds": 600}))
    row = zoo.read_row("vae", run)
    assert row["fid"] == 19.5 and row["nll_nats"] == 95.5 and row["kid"] is None
    assert row["val_fid_by_epoch"] == [30.5, 20.25] and row["minutes"] == 10
    assert row["command"] == "train.py experiment=vae_mnist trainer.max_epochs=2"
    table = zoo.write_table([row], tmp_path)
    assert "| `vae` | 2 | 19.50 | - | - | - | 0.123 | 10 | 95.50 | 10 |" in table
    assert (tmp_path / "table.csv").read_text().startswith("model,fid,kid")
