"""Quality per minute: checkpoints at wall-clock marks, and the benchmark that scores them."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from genlab.callbacks.time_marks import CheckpointAtMinutes, mark_name
from genlab.errors import ConfigError
from genlab.train import run
from tests.conftest import ROOT, TINY, TINY_NETS

MARKS = [
    "+callbacks.time_marks._target_=genlab.callbacks.time_marks.CheckpointAtMinutes",
    "+callbacks.time_marks.minutes=[0.01,0.05]",  # 0.6 s and 3 s
    "trainer.max_epochs=-1",  # the last mark ends the run, not an epoch count
    "model.scheduler=null",  # the default GAN's cosine decay needs an epoch count
    "test=false",
]


def test_marks_write_checkpoints_and_the_last_one_stops_training(make_cfg, tmp_path) -> None:
    cfg = make_cfg(*MARKS, f"+callbacks.time_marks.dirpath={tmp_path / 'marks'}")
    run(cfg)
    first, last = (torch.load(tmp_path / "marks" / mark_name(m), weights_only=True)
                   for m in (0.01, 0.05))  # fmt: skip
    assert first["global_step"] < last["global_step"]  # trained on between the marks
    state = next(v for k, v in last["callbacks"].items() if "CheckpointAtMinutes" in k)
    assert state["passed"] == 2 and 3 <= state["spent"] < 60
    # Stopped at the last mark: the final checkpoint is hardly later than it.
    final = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    assert final["global_step"] - last["global_step"] <= 2 * 2  # a GAN steps twice per batch


def test_a_run_that_ends_before_its_marks_is_checkpointed_where_it_ended(
    make_cfg, tmp_path
) -> None:
    marks = [m for m in MARKS if "max_epochs" not in m and "minutes" not in m]
    cfg = make_cfg(*marks, "+callbacks.time_marks.minutes=[50]",
                   f"+callbacks.time_marks.dirpath={tmp_path / 'marks'}")  # fmt: skip
    run(cfg)  # the tiny recipe's one epoch takes seconds, far from 50 min
    (end,) = (tmp_path / "marks").glob("minute_*.ckpt")
    minute = float(end.name.removeprefix("minute_").removesuffix(".ckpt"))
    assert 0 < minute < 50  # where it ended, not at the mark (minutes on a loaded machine)
    final = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    assert torch.load(end, weights_only=True)["global_step"] == final["global_step"]


def test_time_spent_before_a_resume_counts() -> None:
    marks = CheckpointAtMinutes("/tmp/unused", minutes=[1, 2])
    marks.load_state_dict({"spent": 90.0, "passed": 1})
    assert 90.0 <= marks.elapsed() < 91 and marks.passed == 1
    with pytest.raises(ConfigError, match="positive minutes"):
        CheckpointAtMinutes("/tmp/unused", minutes=[0])


def _benchmark():
    spec = importlib.util.spec_from_file_location(
        "time_to_quality", ROOT / "benchmarks" / "time_to_quality.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_earlier_results_join_one_table_and_figure_without_training(tmp_path: Path) -> None:
    rows = [{"recipe": r, "minute": m, "fid": f, "precision": 0.7, "recall": 0.7,
             "class_kl": 0.1, "nll_nats": None}
            for r, f0 in (("old", 12.0), ("new", 6.0)) for m, f in ((1, f0), (2, f0 / 2))]  # fmt: skip
    for i, part in enumerate((rows[:2], rows[2:])):
        (tmp_path / f"{i}.json").write_text(json.dumps({"machine": "m", "rows": part}))
    out = _benchmark().main([
        "--rows", str(tmp_path / "0.json"), "--rows", str(tmp_path / "1.json"),
        "--out", str(tmp_path / "out"), "--plot", str(tmp_path / "both.png"),
    ])  # fmt: skip
    assert out == rows  # both recipes, in order; nothing trained (no run folders)
    assert (tmp_path / "both.png").stat().st_size > 1000
    assert not list((tmp_path / "out").glob("*/*/checkpoints"))


@pytest.mark.slow
def test_benchmark_scores_each_mark_of_each_recipe(tmp_path: Path) -> None:
    bench = _benchmark()
    tiny = " ".join([*TINY, *TINY_NETS["gan"]])
    rows = bench.main([
        "--minutes", "0.1", "--marks", "0.05", "0.1", "--num-samples", "100",
        "--recipe", f"tiny={tiny}", "--out", str(tmp_path), "--plot", str(tmp_path / "fid.png"),
        "--", "trainer.max_epochs=-1", "model.scheduler=null",  # until the budget, not 1 epoch
    ])  # fmt: skip
    assert [(r["recipe"], r["minute"]) for r in rows] == [("tiny", 0.05), ("tiny", 0.1)]
    assert all(r["fid"] > 0 and 0 <= r["precision"] <= 1 for r in rows)
    assert (tmp_path / "fid.png").stat().st_size > 1000
    (results,) = tmp_path.glob("*/results.csv")
    assert len(list(csv.DictReader(results.open()))) == 2
