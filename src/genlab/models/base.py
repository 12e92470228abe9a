"""The base class of genlab's models: helpers a model calls, and what it declares.

A model is a LightningModule that optimises manually and provides what docs/models.md lists
(the contract). ``GenerativeModel`` holds the shared helpers (``noise``, ``sample`` on
``generate``, ``backward_and_step``, ``check_finite``, ``logging_step``, ``log_latest``,
``evaluation_rng``) and overrides no Lightning hook: the framework behaviour (scheduler
stepping, gradient clipping, per-rank noise, ``compile``/``channels_last``, ``log_latest``
persistence, the stop before a batch) lives in ``genlab.callbacks.framework``, which ``train``
installs in every run. A subclass may override any hook; ``super()`` is needed in ``__init__``
only. A family (GAN, VAE, a researcher's own) adds its nets, ``generate`` (or ``sample``), the
training and evaluation steps, and declares what it supports:

- ``monitor`` / ``monitor_mode``: the metric checkpoints, sweeps and ``test`` on best read
  (class defaults; the config may override them);
- ``logged_metrics``: the metrics its training and validation steps log, which
  ``model.monitor`` may name (checked before training by ``genlab.models.contract``);
- ``model_metrics``: the metrics its ``test_step`` computes that ``eval.py metrics=[...]`` may
  ask for (``prepare_test`` hears which ones are wanted);
- ``private_nets()`` (optional): the nets that see real images, for ``privacy.enabled=true``;
  ``check_private_training()`` refuses its own settings DP-SGD cannot honour;
- the settings the framework callbacks read: ``gradient_clip_val``, ``compile_nets``,
  ``channels_last`` (with ``compilable(net)``) and ``latest_metrics``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, ClassVar

import pytorch_lightning as pl
import torch

from genlab.checkpoints.load import last_good_checkpoint, load_model
from genlab.config.rules import AT_LEAST_ONE, NON_NEGATIVE
from genlab.errors import CheckpointError, ConfigError, DivergenceError
from genlab.metrics.sampling import check_labels, draw_labels

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


def refused_with_privacy(setting: str, value: Any, fix: str) -> ConfigError:
    """The one-line error for a model setting that DP-SGD cannot honour."""
    return ConfigError(
        f"model.{setting}={value} does not combine with privacy.enabled=true (DP-SGD's "
        f"per-sample gradients): {fix}"
    )


def is_logging_step(trainer: pl.Trainer | None, batch_idx: int) -> bool:
    """Whether training batch ``batch_idx`` is one a logger records: every
    ``trainer.log_every_n_steps``-th batch of the run, and an epoch's last (no trainer: all)."""
    if trainer is None or batch_idx + 1 >= trainer.num_training_batches:
        return True
    # Loggers record every log_every_n_steps-th batch of the run (manual optimisation).
    batches = trainer.current_epoch * trainer.num_training_batches + batch_idx + 1
    return batches % trainer.log_every_n_steps == 0


class GenerativeModel(pl.LightningModule):
    """Base LightningModule for generative image models.

    Subclasses implement ``generate(z)`` (latents -> images in [0, 1]); ``sample(n, generator)
    -> [n, C, H, W] in [0, 1]`` is built on it. Callbacks, metrics and ``sample.py`` use only
    ``sample``, so they work for every model. All models optimise manually
    (``automatic_optimization = False``): the training step reads top to bottom, every
    ``zero_grad``/``backward``/``step`` in sight.

    The constructor's arguments are keyword-only; a subclass takes its own and passes the rest
    on with ``**base``. The class overrides no Lightning hook: override any of them freely.
    """

    monitor: str = "val/loss"  # class defaults, overridden per family and by the config
    monitor_mode: str = "min"
    model_metrics: ClassVar[tuple[str, ...]] = ()
    # What training_step/validation_step log (a tuple, or a property when settings decide):
    # model.monitor is checked against it before training. None: undeclared, only warned.
    logged_metrics: ClassVar[tuple[str, ...] | None] = None

    def __init__(
        self,
        *,
        latent_dim: Annotated[int, AT_LEAST_ONE],
        num_classes: Annotated[int, NON_NEGATIVE] = 0,
        monitor: str | None = None,
        monitor_mode: str | None = None,
        scheduler: SchedulerFactory | None = None,
        gradient_clip_val: float | None = None,
        compile: bool = False,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        if monitor is not None:
            self.monitor = monitor
        if monitor_mode is not None:
            self.monitor_mode = monitor_mode
        if self.monitor_mode not in ("min", "max"):
            raise ConfigError(f"model.monitor_mode={self.monitor_mode!r}: choose 'min' or 'max'.")
        self.automatic_optimization = False
        self.latent_dim = latent_dim
        # > 0: a class-conditional model (the contract's one flag): sample() and generate()
        # take labels, training reads them at batch[1]. 0: unconditional, labels refused.
        self.num_classes = num_classes
        self.scheduler_factory = scheduler
        # Read by genlab.callbacks.framework (clipping, speed, latest_metrics).
        self.gradient_clip_val = gradient_clip_val
        self.compile_nets, self.channels_last = compile, channels_last
        self.latest_metrics: dict[str, torch.Tensor] = {}  # see log_latest

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls,
        checkpoint_path: str | Path,
        map_location: str | torch.device | None = None,
        hparams_file: Any = None,
        strict: bool | None = None,
        *,
        trust: bool = False,
        **kwargs: Any,
    ) -> GenerativeModel:
        """``GAN.load_from_checkpoint(path)``: the model a genlab checkpoint holds, built from
        its stored config after the trust check of ``genlab.load_model`` (docs/security.md),
        in eval mode. It must be an instance of this class."""
        if hparams_file is not None or strict is not None or kwargs:
            raise ConfigError(
                f"{cls.__name__}.load_from_checkpoint takes a path, map_location and trust only "
                "(genlab models are rebuilt from the run's stored config): call "
                "genlab.load_model(path) and change the model afterwards."
            )
        model, _ = load_model(checkpoint_path, map_location or "cpu", trust=trust)
        if not isinstance(model, cls):
            raise CheckpointError(
                f"{checkpoint_path} holds a {type(model).__qualname__}, not a {cls.__name__}: "
                f"load it with genlab.load_model(path) or {type(model).__name__}"
                ".load_from_checkpoint(path)."
            )
        return model

    # --- what the model declares --------------------------------------------------------------
    def prepare_test(self, metrics: Sequence[str], nll_samples: int) -> None:
        """``eval.py`` is about to run ``trainer.test`` for ``metrics`` (a subset of
        ``model_metrics``); e.g. a VAE sets its importance samples to ``nll_samples``."""

    def check_private_training(self) -> None:
        """Raise ``refused_with_privacy(...)`` for a setting DP-SGD cannot honour (called by
        the privacy component when ``privacy.enabled=true``)."""
        # DP-SGD clips every per-sample gradient already; the per-sample hooks do not trace
        # through a compiled net.
        for name, value in (("gradient_clip_val", self.gradient_clip_val),
                            ("compile", self.compile_nets)):  # fmt: skip
            if value:
                raise refused_with_privacy(
                    name, value, "remove it (DP-SGD clips each image's gradient to "
                    "privacy.max_grad_norm)."
                )  # fmt: skip

    # --- sampling interface -------------------------------------------------------------------
    def noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Standard-normal latents ``[n, latent_dim]`` on the model's device.

        With a (CPU) ``generator`` they are drawn on the CPU, so a seed gives the same z on any
        device; without one (training) they are drawn on the device, with no host copy.
        """
        # In the model's dtype (float64 under trainer.precision=64); autocast handles 16-bit.
        if generator is None:
            return torch.randn(n, self.latent_dim, device=self.device, dtype=self.dtype)
        z = torch.randn(n, self.latent_dim, generator=generator, dtype=self.dtype)
        return z.to(self.device)

    def draw_labels(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` classes drawn uniformly (a conditional model's labels when none are asked for),
        from ``generator`` on the CPU like ``noise``; drawn after the latents, so a seed gives
        the same (z, label) pairs everywhere (``genlab.metrics.sampling.draw_labels``)."""
        return draw_labels(self.num_classes, n, generator).to(self.device)

    def labels_for(
        self, n: int, labels: torch.Tensor | None, generator: torch.Generator | None = None
    ) -> torch.Tensor | None:
        """The labels a sample of ``n`` uses: None for an unconditional model (which refuses
        labels), ``labels`` checked (n classes in [0, num_classes)), or uniform draws."""
        if not self.num_classes:
            if labels is not None:
                raise ConfigError(
                    f"{type(self).__name__} is unconditional (num_classes=0): it cannot be "
                    "asked for classes; drop labels, or train a conditional model (model=cgan)."
                )
            return None
        if labels is None:
            return self.draw_labels(n, generator)
        return check_labels(labels, n, self.num_classes).to(self.device)

    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Latents ``[N, latent_dim]`` (and, for a conditional model, classes ``[N]``) ->
        images ``[N, C, H, W]`` in [0, 1]."""
        raise NotImplementedError

    @torch.no_grad()
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``n`` images in [0, 1]; the same ``generator`` seed gives the same images. A
        conditional model draws class ``labels[i]`` for image i (uniform classes when none)."""
        z = self.noise(n, generator)
        labels = self.labels_for(n, labels, generator)
        images = self.generate(z) if labels is None else self.generate(z, labels)
        return images.clamp(0, 1)

    def conditioned(
        self, net: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor | None
    ) -> torch.Tensor:
        """``net(x)``, or ``net(x, labels)`` for a conditional model: the one call a family
        makes for each net, so the same training step serves both (``genlab.nets.conv``'s nets
        take labels with ``num_classes`` > 0)."""
        return net(x) if labels is None else net(x, labels)

    def check_label_nets(self, **nets: torch.nn.Module) -> None:
        """The nets that take labels are those of a conditional model: a net whose
        ``num_classes`` differs from the model's would fail at its first call (or silently
        ignore the classes), so say which key to set now."""
        for key, net in nets.items():
            theirs = getattr(net, "num_classes", None)
            if theirs is None or theirs == self.num_classes:
                continue
            raise ConfigError(
                f"model.{key}.num_classes={theirs} but model.num_classes={self.num_classes}: "
                f"set model.{key}.num_classes=${{model.num_classes}} (a conditional model "
                "passes labels to every net that sees them, an unconditional one to none)."
            )

    def batch_labels(self, batch: Any) -> torch.Tensor | None:
        """A conditional model's labels, ``batch[1]`` (None for an unconditional model)."""
        return batch[1].long() if self.num_classes else None

    # --- speed options (applied by genlab.callbacks.framework.speed) -------------------------
    def compilable(self, net: torch.nn.Module) -> bool:
        """Whether ``compile`` may compile ``net``; a model says no for a net it differentiates
        twice (torch.compile has no double backward), which then runs eagerly."""
        return True

    @contextmanager
    def evaluation_rng(self, batch_idx: int) -> Iterator[None]:
        """Random draws of validation/test batch ``batch_idx`` (reparameterisation noise,
        augmentation) come from a seed of their own, and the training RNG stream is left where
        it was: scores are reproducible, and skipping or repeating a validation (a resumed
        run) cannot change the training that follows."""
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.default_generator.manual_seed(batch_idx)
            if devices:
                torch.cuda.manual_seed(batch_idx)
            yield

    # --- optimisation helpers -----------------------------------------------------------------
    def _with_schedulers(self, optimizers: list[torch.optim.Optimizer]) -> list[dict]:
        """``configure_optimizers``' answer: each optimizer with the configured scheduler,
        stepped once per epoch by genlab.callbacks.framework.schedulers."""
        configs = []
        for opt in optimizers:
            config: dict = {"optimizer": opt}
            if self.scheduler_factory is not None:
                config["lr_scheduler"] = {"scheduler": self.scheduler_factory(opt)}
            configs.append(config)
        return configs

    def attached_trainer(self) -> pl.Trainer | None:
        """The trainer running this model, or None (a model used on its own)."""
        try:
            return self.trainer
        except RuntimeError:
            return None

    def logging_step(self, batch_idx: int) -> bool:
        """Log per-step training metrics on this batch? Only on the batches a logger records
        (every ``trainer.log_every_n_steps``) and on an epoch's last: each ``self.log`` costs
        ~1 ms of Python, more than a small net's whole step on a GPU."""
        return is_logging_step(self.attached_trainer(), batch_idx)

    def log_latest(self, name: str, value: torch.Tensor) -> None:
        """Log a training metric computed on only some batches (a lazy penalty, one batch in
        16): its latest value is logged on every logging step and saved in checkpoints (by
        ``genlab.callbacks.framework.latest_metrics``).

        Logged directly, such a metric would go stale: Lightning re-logs a step metric's last
        value at every later logging step of the epoch, and a run resumed mid-epoch lacks
        that value, so its metrics CSV would differ from an uninterrupted run's."""
        self.latest_metrics[name] = value.detach()

    def backward_and_step(self, loss: torch.Tensor, optimizer: Any, name: str) -> None:
        """zero_grad -> backward -> step, after refusing a non-finite loss. ``name`` names the
        loss in that refusal only (nothing is logged). Gradients are clipped inside
        ``optimizer.step()`` at ``gradient_clip_val`` (genlab.callbacks.framework.clipping)."""
        self.check_finite(loss, name)
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        optimizer.step()

    def check_finite(self, loss: torch.Tensor, name: str) -> None:
        """Stop with advice on a NaN/Inf loss, before it reaches the weights."""
        # One host sync per step: cheap on CPU; worth revisiting for GPU throughput.
        if not torch.isfinite(loss):
            raise DivergenceError(
                f"{name} is {loss.item()} at global step {self.global_step} (epoch "
                f"{self.current_epoch}). Training diverged: lower the learning rate "
                "(model.optimizer.lr=...), set model.gradient_clip_val=1.0, or check the input "
                "data for NaNs; resume from the last good checkpoint: "
                f"ckpt_path={last_good_checkpoint(self.attached_trainer())}"
            )
