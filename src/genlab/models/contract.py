"""The pre-flight check: the model contract (docs/models.md), checked on the built model before
any data is loaded.

``train.py`` calls ``check_contract`` right after instantiating the model. It draws a few seeded
samples and reads what the model declares, in about a second: a contract mistake (samples in
[-1, 1], a ``sample`` that ignores its generator, a wrong image shape, a monitor nobody logs, a
model-owned RNG that exact resume cannot restore) stops the run with one line naming the broken
row of the contract table and the fix, instead of training to a wrong result or failing after
an epoch.

The check leaves everything as it found it (RNG states, the model's buffers, train/eval modes
and its own generators), so a seeded run and an exact resume stay bit-identical with it.

Plain values in, no callbacks, data or tasks imported: ``train.py`` passes the data's shape and
the metrics its configured callbacks log.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import random
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from genlab.errors import ContractError
from genlab.metrics.sampling import num_classes

log = logging.getLogger(__name__)

SAMPLES = 2  # per draw: enough to check shapes and seeding, cheap for any model on a CPU
# Logged by Lightning itself for every model.
LIGHTNING_METRICS = frozenset({"epoch", "step"})


def check_contract(
    model: nn.Module,
    *,
    monitor: str | None,
    channels: int | None,
    image_size: int | None,
    callback_metrics: Collection[str] = (),
    num_classes: int | None = None,
) -> None:
    """Raise ``ContractError`` (one line: the broken row, the fix) for the first contract row
    ``model`` breaks; ``channels``/``image_size``/``num_classes`` are the data's (None: not
    checked), ``callback_metrics`` what the configured callbacks log (``val/fid`` from
    callbacks.fid)."""
    if monitor is not None:
        check_monitor(model, monitor, callback_metrics)
    check_samples(model, channels, image_size)
    check_conditional(model, num_classes)
    check_owned_generators(model)


def _name(model: nn.Module) -> str:
    return type(model).__qualname__


def _broken(row: str, what: str, fix: str) -> ContractError:
    return ContractError(f"{what}: contract row '{row}' (docs/models.md) is broken. Fix: {fix}")


# --- monitor --------------------------------------------------------------------------------
def declared_metrics(model: nn.Module) -> frozenset[str] | None:
    """The metrics ``model`` declares it logs in training and validation (``logged_metrics``,
    a collection or a method returning one); None when it declares nothing."""
    declared = getattr(model, "logged_metrics", None)
    if callable(declared):
        declared = declared()
    return None if declared is None else frozenset(declared)


def check_monitor(model: nn.Module, monitor: str, callback_metrics: Collection[str]) -> None:
    """``monitor`` must be a metric the model declares or a configured callback logs: a typo
    would otherwise surface only after the first epoch."""
    declared = declared_metrics(model)
    known = set(callback_metrics) | LIGHTNING_METRICS | set(declared or ())
    if monitor in known:
        return
    close = difflib.get_close_matches(monitor, sorted(known), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    if declared is None:  # a plain LightningModule: its metrics are known only once logged
        log.warning(
            "model.monitor=%s%s: %s declares no logged_metrics, so a typo shows only after the "
            "first validation; declare the metrics it logs (docs/models.md, contract).",
            monitor,
            hint,
            _name(model),
        )
        return
    choices = ", ".join(sorted(m for m in known - LIGHTNING_METRICS if m.startswith("val/")))
    raise _broken(
        "monitor",
        f"model.monitor={monitor} is logged neither by {_name(model)} (its logged_metrics) nor "
        f"by a configured callback{hint}",
        f"set model.monitor to a logged metric ({choices or 'none logged at validation'}), or "
        "log it in validation_step and add it to logged_metrics.",
    )


# --- sample ---------------------------------------------------------------------------------
def check_samples(model: nn.Module, channels: int | None, image_size: int | None) -> None:
    """``sample(n, generator)``: floats in [0, 1], shape [n, C, H, W] of the data, the same
    images for the same seed and others for another seed."""
    row, name = "sample", _name(model)
    sample = getattr(model, "sample", None)
    if not callable(sample):
        raise _broken(
            row,
            f"{name} has no sample(n, generator=None) method",
            "add one, or subclass genlab.models.base.GenerativeModel and implement generate(z).",
        )
    if not _takes_generator(sample):
        raise _broken(
            row,
            f"{name}.sample({', '.join(inspect.signature(sample).parameters)}) takes no generator",
            "accept sample(n, generator=None) and draw its noise with "
            "torch.randn(..., generator=generator).",
        )
    with untouched(model):
        first, again, other = [
            sample(SAMPLES, generator=torch.Generator().manual_seed(seed)) for seed in (0, 0, 1)
        ]
    call = f"{name}.sample({SAMPLES}, generator)"
    if not isinstance(first, torch.Tensor) or not first.is_floating_point():
        got = first.dtype if isinstance(first, torch.Tensor) else type(first).__name__
        raise _broken(
            row,
            f"{call} returned {got}, not a float tensor",
            "return a float tensor [n, C, H, W] in [0, 1].",
        )
    wanted = [SAMPLES, channels, image_size, image_size]
    fits = first.dim() == 4 and all(
        w is None or w == got for w, got in zip(wanted, first.shape, strict=True)
    )
    if not fits:
        shown = "[" + ", ".join("?" if w is None else str(w) for w in wanted) + "]"
        raise _broken(
            row,
            f"{call} returned shape {list(first.shape)}, but the data's images "
            f"are {shown} (data.channels={channels}, data.image_size={image_size})",
            "build the nets from ${data.channels} and ${data.image_size} in the "
            "model's config and return [n, C, H, W].",
        )
    if not torch.isfinite(first).all():
        raise _broken(
            row,
            f"{call} returned NaN or Inf values",
            "check generate/sample for divisions by zero and log of 0 at initialisation.",
        )
    low, high = first.min().item(), first.max().item()
    if low < 0 or high > 1:
        raise _broken(
            row,
            f"{call} returned values in [{low:.3g}, {high:.3g}], not in [0, 1]",
            "convert inside the model, e.g. return (x + 1) / 2 for a tanh output, "
            "or torch.sigmoid(logits).",
        )
    if not torch.equal(first, again):
        raise _broken(
            row,
            f"{call} gave other images for the same seeded generator: it ignores its generator",
            "draw the noise from it: torch.randn(n, ..., "
            "generator=generator) (on the CPU, then .to(self.device)).",
        )
    if torch.equal(first, other):
        raise _broken(
            row,
            f"{call} gave the same images for seeds 0 and 1: its noise does not "
            "come from its generator",
            "draw the noise from it: torch.randn(n, ..., "
            "generator=generator), not from a generator seeded inside.",
        )


def _takes(sample: Any, argument: str) -> bool:
    try:
        params = inspect.signature(sample).parameters.values()
    except (TypeError, ValueError):
        return True  # no signature to read (a C function): let the call tell
    return any(p.name == argument or p.kind is p.VAR_KEYWORD for p in params)


def _takes_generator(sample: Any) -> bool:
    return _takes(sample, "generator")


# --- conditional ----------------------------------------------------------------------------
def check_conditional(model: nn.Module, data_classes: int | None) -> None:
    """A conditional model (``num_classes`` > 0): its classes are the data's, and
    ``sample(n, generator, labels)`` honours ``labels`` (same seed, other classes: other
    images; the same classes: the same images)."""
    classes, row, name = num_classes(model), "conditional", _name(model)
    if not classes:
        return
    if data_classes is not None and classes != data_classes:
        raise _broken(
            row,
            f"{name} has num_classes={classes}, but the data has {data_classes} classes",
            "set the model's num_classes to ${data.num_classes} in its config.",
        )
    if not _takes(model.sample, "labels"):
        raise _broken(
            row,
            f"{name} is conditional (num_classes={classes}) but its sample() takes no labels",
            "accept sample(n, generator=None, labels=None) and draw image i of class labels[i] "
            "(uniform classes from the generator when labels is None).",
        )
    ask = [torch.zeros(SAMPLES, dtype=torch.long), torch.full((SAMPLES,), classes - 1)]
    with untouched(model):
        first, again, other = [
            model.sample(SAMPLES, generator=torch.Generator().manual_seed(0), labels=labels)
            for labels in (ask[0], ask[0], ask[1])
        ]
    call = f"{name}.sample({SAMPLES}, generator, labels)"
    if not torch.equal(first, again):
        raise _broken(row, f"{call} gave other images for the same seed and classes",
                      "draw every random number from the generator.")  # fmt: skip
    if classes > 1 and torch.equal(first, other):
        raise _broken(
            row,
            f"{call} gave the same images for classes 0 and {classes - 1}: it ignores its labels",
            "pass labels to the nets (genlab.nets.conv's nets take them with num_classes > 0).",
        )


@contextmanager
def untouched(model: nn.Module) -> Iterator[None]:
    """Run a block on ``model`` in eval mode without gradients, then put back what it may have
    moved: the global RNGs (torch, numpy, random), the model's buffers (BatchNorm statistics),
    its own generators and each module's train/eval mode."""
    modes = [(m, m.training) for m in model.modules()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    generators = [(g, g.get_state()) for _, g in owned_generators(model)]
    devices = sorted({b.device.index or 0 for b in model.parameters() if b.is_cuda})
    python, numpy = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            model.eval()
            yield
    finally:
        for module, training in modes:
            module.training = training
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)
        for generator, state in generators:
            generator.set_state(state)
        random.setstate(python)
        np.random.set_state(numpy)


# --- randomness -----------------------------------------------------------------------------
def owned_generators(model: nn.Module) -> list[tuple[str, torch.Generator]]:
    """(dotted attribute, generator) for each ``torch.Generator`` the model's modules hold, as
    an attribute or inside a list, tuple or dict attribute."""
    found: list[tuple[str, torch.Generator]] = []
    for prefix, module in model.named_modules():
        for attr, value in vars(module).items():
            items = (
                value.items()
                if isinstance(value, dict)
                else enumerate(value)
                if isinstance(value, (list, tuple))
                else [(None, value)]
            )
            for key, item in items:
                if isinstance(item, torch.Generator):
                    name = f"{prefix}.{attr}" if prefix else attr
                    found.append((name if key is None else f"{name}[{key!r}]", item))
    return found


def check_owned_generators(model: nn.Module) -> None:
    """A generator the model owns is not among the RNG states genlab checkpoints: unless the
    model saves its state itself, a resumed run draws other noise than an uninterrupted one."""
    generators = owned_generators(model)
    if not generators:
        return
    saved = _checkpointed_tensors(model)
    if saved is None:
        return  # its on_save_checkpoint needs a trainer: nothing to judge before training
    for name, generator in generators:
        state = generator.get_state()
        if not any(
            t is generator
            or (isinstance(t, torch.Tensor) and t.shape == state.shape and torch.equal(t, state))
            for t in saved
        ):
            raise _broken(
                "randomness",
                f"{_name(model)}.{name} is a torch.Generator whose state is not in its "
                "checkpoint: a resumed run would draw other noise than the uninterrupted one",
                "draw from torch's global RNG (torch.randn_like(x)), which genlab checkpoints, "
                f"or save {name}.get_state() in on_save_checkpoint and set_state it back in "
                "on_load_checkpoint.",
            )


def _checkpointed_tensors(model: nn.Module) -> list[Any] | None:
    """Every tensor (and generator) the model puts in a checkpoint: its state dict and what its
    ``on_save_checkpoint`` adds; None when that hook cannot run without a trainer."""
    checkpoint: dict[str, Any] = {"state_dict": model.state_dict()}
    hook = getattr(model, "on_save_checkpoint", None)
    if callable(hook):
        try:
            with untouched(model):
                hook(checkpoint)
        except Exception as err:  # e.g. reads self.trainer, not attached yet
            log.warning(
                "%s.on_save_checkpoint could not run before training (%s): whether it saves the "
                "state of its own torch.Generator is not checked.",
                _name(model),
                err,
            )
            return None
    found: list[Any] = []
    stack: list[Any] = [checkpoint]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend(value)
        elif isinstance(value, (torch.Tensor, torch.Generator)):
            found.append(value)
    return found
