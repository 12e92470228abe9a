"""genlab.config.rules: one vocabulary of value rules, read from constructors' ``Annotated``
hints at start-up and from the tasks' argument schemas alike."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import pytest
from omegaconf import DictConfig, OmegaConf

from genlab.config.arguments import Arg, check_args
from genlab.config.rules import (
    AT_LEAST_ONE,
    DECAY,
    FRACTION,
    MONITOR_MODE,
    SEED,
    FilePath,
    Names,
    OneOf,
    OrNone,
    OutputFile,
    Pattern,
    Range,
    Rule,
)
from genlab.config.validation import check_monitor_mode, check_types
from genlab.errors import ConfigError

SAMPLER = OneOf("ddpm", "ddim")
STEPS = Range(ge=1, le=1000, integer=True)


class Toy:
    """A constructor declaring its rules the way genlab's models and nets do."""

    def __init__(
        self,
        steps: Annotated[int, STEPS] = 50,
        sampler: Annotated[str, SAMPLER] = "ddpm",
        decay: Annotated[float, DECAY] | None = None,
        betas: Annotated[list[float], Range(ge=0, lt=1)] = (0.5, 0.9),  # type: ignore[assignment]
        on_budget: Literal["stop", "warn"] = "stop",
    ) -> None:
        self.steps, self.sampler, self.decay, self.betas = steps, sampler, decay, betas


def toy(**values: object) -> DictConfig:
    return OmegaConf.create({"_target_": f"{__name__}.Toy", **values})


@pytest.mark.parametrize(
    ("rule", "good", "bad", "problem"),
    [
        (AT_LEAST_ONE, 1, 0, "must be >= 1"),
        (FRACTION, 1.0, 0, "must be in (0, 1]"),
        (DECAY, 0.999, 1.0, "must be in (0, 1)"),
        (Range(le=3), -7, 3.5, "must be <= 3"),
        (Range(ge=0), 0.0, "abc", "needs a number >= 0"),
        (STEPS, 1000, 1001, "needs an integer from 1 to 1000"),
        (STEPS, 5, 5.0, "needs an integer from 1 to 1000"),
        (Range(ge=2, integer=True), 2, True, "needs an integer >= 2"),  # a bool is no count
        (SEED, 2**32 - 1, -1, "needs an integer from 0 to 4294967295"),
        (SAMPLER, "ddim", "euler", "needs one of ddpm, ddim"),
        (OrNone(AT_LEAST_ONE), None, 0, "must be >= 1"),
        (Pattern(r"cuda(:\d+)?", "cuda or cuda:<index>"), "cuda:1", "cuda:x", "needs cuda or"),
        (FilePath(), "a.npy", 5, "needs a file path"),
        (Names(), ["fid", "kid"], [], "needs a list of names"),
    ],
)
def test_a_rule_names_what_is_wrong(rule: Rule, good: object, bad: object, problem: str) -> None:
    assert isinstance(rule, Rule)
    assert rule.violation(good) is None
    assert rule.violation(bad) == problem or rule.violation(bad).startswith(problem)
    assert rule.describe()  # every rule says what it wants


def test_describe_is_a_noun_phrase() -> None:
    assert STEPS.describe() == "an integer from 1 to 1000"
    assert Range(ge=1, integer=True).describe() == "an integer >= 1"
    assert FRACTION.describe() == "a number in (0, 1]"
    assert OrNone(SAMPLER).describe() == "one of ddpm, ddim or null"


def test_a_near_miss_gets_did_you_mean() -> None:
    assert SAMPLER.violation("ddin") == "needs one of ddpm, ddim (did you mean ddim?)"
    assert MONITOR_MODE.violation("mxa") == "needs one of min, max (did you mean max?)"
    assert SAMPLER.violation("euler") == "needs one of ddpm, ddim"  # nothing close: no guess
    assert SAMPLER.violation(3) == "needs one of ddpm, ddim"


def test_output_file_is_checked_before_the_work(tmp_path: Path) -> None:
    rule = OutputFile(".npy", ".pt")
    assert rule.violation(str(tmp_path / "new" / "x.npy")) is None  # missing folders are made
    assert rule.violation(str(tmp_path / "x.png")) == "the suffix must be one of .npy, .pt"
    (tmp_path / "d.npy").mkdir()
    assert rule.violation(str(tmp_path / "d.npy")) == "that is a folder, not a file name"
    (tmp_path / "f").write_text("")
    assert "is a file, so no folder" in rule.violation(str(tmp_path / "f" / "x.npy"))


@pytest.mark.parametrize(
    ("rule", "value"),
    [(STEPS, 0), (SAMPLER, "ddin"), (Range(gt=0, lt=1), 1.5)],
)
def test_one_rule_reads_the_same_as_a_hint_and_as_an_argument(rule: Rule, value: object) -> None:
    """The vocabulary is one: the same rule object, declared on a constructor or in a task's
    argument schema, refuses a value with the same phrase, after the key and value."""
    problem = rule.violation(value)
    assert problem is not None

    def init(self: object, x: object = None) -> None:
        self.x = x

    init.__annotations__ = {"x": Annotated[object, rule], "return": None}
    globals()["Holder"] = type("Holder", (), {"__init__": init})  # check_types finds it here
    try:
        with pytest.raises(ConfigError) as hint:
            check_types(OmegaConf.create({"_target_": f"{__name__}.Holder", "x": value}), "m")
    finally:
        del globals()["Holder"]
    with pytest.raises(ConfigError) as arg:
        check_args(OmegaConf.create({"x": value}), {"x": Arg("a setting", rule, "1")})
    assert str(hint.value).startswith(f"m.x={value!r} {problem}: fix the value")
    assert str(arg.value).startswith(f"x={value!r} ({type(value).__name__}): {problem};")
    assert str(arg.value).endswith("x is a setting. Pass e.g. x=1.")


def test_constructor_rules_are_enforced_at_start_up() -> None:
    check_types(toy(steps=10, sampler="ddim", decay=0.9, betas=[0.0, 0.99]), "model")
    check_types(toy(decay=None), "model")  # null where the hint allows it: no rule applies
    refused = {
        "steps": (0, "model.steps=0 needs an integer from 1 to 1000"),
        "sampler": ("ddin", "model.sampler='ddin' needs one of ddpm, ddim (did you mean ddim?)"),
        "decay": (1.0, "model.decay=1.0 must be in (0, 1)"),
        "betas": ([0.5, 1.0], "model.betas=[0.5, 1.0] must be in [0, 1)"),  # each of a list
    }
    for key, (value, message) in refused.items():
        with pytest.raises(ConfigError) as err:
            check_types(toy(**{key: value}), "model")
        assert str(err.value).startswith(message + ": fix the value"), key


def test_the_type_is_named_before_the_range() -> None:
    with pytest.raises(ConfigError, match=r"model.steps='many' \(str\): .*Toy needs int there"):
        check_types(toy(steps="many"), "model")


def test_a_literal_hint_gets_did_you_mean_too() -> None:
    with pytest.raises(
        ConfigError, match=r"needs one of 'stop', 'warn' \(did you mean 'warn'\?\) there"
    ):
        check_types(toy(on_budget="wran"), "model")
    with pytest.raises(ConfigError, match=r"needs one of 'stop', 'warn' there"):
        check_types(toy(on_budget="halt"), "model")


def test_monitor_mode_is_one_rule() -> None:
    check_monitor_mode("min")
    with pytest.raises(ConfigError, match=r"model.monitor_mode='avg': choose 'min' or 'max'"):
        check_monitor_mode("avg")


def test_train_fraction_is_checked_once_for_every_data_module() -> None:
    """The shared base checks it, with the rule its hint declares; both data modules pass
    it on instead of checking it again."""
    from genlab.data.image_folder import ImageFolderDataModule
    from genlab.data.mnist import MNISTDataModule
    from genlab.data.splits import SplitDataModule

    message = r"data.train_fraction=1.5 must be in \(0, 1\]"
    with pytest.raises(ConfigError, match=message):
        MNISTDataModule(train_fraction=1.5)
    with pytest.raises(ConfigError, match=message):
        ImageFolderDataModule(path="nowhere", train_fraction=1.5)
    with pytest.raises(ConfigError, match=message):  # at start-up too, from the base's hint
        check_types(
            OmegaConf.create(
                {"_target_": "genlab.data.mnist.MNISTDataModule", "train_fraction": 1.5}
            ),
            "data",
        )
    assert MNISTDataModule(train_fraction=0.5).train_fraction == 0.5
    assert SplitDataModule(1, 0, False, False, train_fraction=0.25).train_fraction == 0.25
