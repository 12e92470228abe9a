"""What every genlab model shares: the sampling interface, monitor key and optimizer plumbing."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import pytorch_lightning as pl
import torch

from genlab.callbacks.divergence import last_good_checkpoint
from genlab.errors import ConfigError, DivergenceError
from genlab.models.privacy import DifferentialPrivacy

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


class GenerativeModel(pl.LightningModule):
    """Base LightningModule for generative image models.

    Subclasses implement ``generate(z)``; ``sample(n, generator) -> [n, C, H, W] in [0, 1]`` is
    built on it. Callbacks, metrics and ``sample.py`` use only these, so they work for every
    model. All models optimise manually
    (``automatic_optimization = False``): the training step reads top to bottom, every
    ``zero_grad``/``backward``/``step`` in sight.
    """

    def __init__(
        self,
        latent_dim: int,
        monitor: str,
        monitor_mode: str,
        scheduler: SchedulerFactory | None = None,
        gradient_clip_val: float | None = None,
        compile: bool = False,
        channels_last: bool = False,
        privacy: DifferentialPrivacy | None = None,
    ) -> None:
        super().__init__()
        if monitor_mode not in ("min", "max"):
            raise ConfigError(f"model.monitor_mode={monitor_mode!r}: choose 'min' or 'max'.")
        self.privacy = privacy if privacy is not None and privacy.enabled else None
        if self.privacy is not None:
            # DP-SGD clips every per-sample gradient already; the per-sample hooks do not
            # trace through a compiled net.
            for name, value in (("gradient_clip_val", gradient_clip_val), ("compile", compile)):
                if value:
                    raise ConfigError(
                        f"model.{name} does not combine with model.privacy.enabled=true: "
                        "remove it (DP-SGD clips each image's gradient to "
                        "model.privacy.max_grad_norm)."
                    )
        self.automatic_optimization = False
        self.latent_dim = latent_dim
        self.monitor = monitor
        self.monitor_mode = monitor_mode
        self.scheduler_factory = scheduler
        self.gradient_clip_val = gradient_clip_val
        self.compile_nets, self.channels_last = compile, channels_last
        self._nets_configured = False

    # --- sampling interface -------------------------------------------------------------------
    def noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Standard-normal latents ``[n, latent_dim]`` on the model's device.

        With a (CPU) ``generator`` they are drawn on the CPU, so a seed gives the same z on any
        device; without one (training) they are drawn on the device, with no host copy.
        """
        if generator is None:
            return torch.randn(n, self.latent_dim, device=self.device)
        return torch.randn(n, self.latent_dim, generator=generator).to(self.device)

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """Latents ``[N, latent_dim]`` -> images ``[N, C, H, W]`` in [0, 1]."""
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images in [0, 1]; the same ``generator`` seed gives the same images."""
        return self.generate(self.noise(n, generator)).clamp(0, 1)

    # --- speed options ------------------------------------------------------------------------
    def configure_model(self) -> None:
        """``compile`` / ``channels_last`` act on each net (G, D, encoder, ...), never on the
        LightningModule: ``toggle_optimizer`` flips ``requires_grad`` on the module's parameters
        twice per step, which would invalidate a graph of the whole training step. In-place
        ``nn.Module.compile`` keeps the state-dict keys, so checkpoints load either way."""
        if self._nets_configured:  # Lightning calls this again for test/validate
            return
        self._nets_configured = True
        for net in self.children():
            if self.channels_last:  # NHWC: faster convolutions on tensor cores and oneDNN.
                # Batches need no conversion: a conv with NHWC weights returns NHWC outputs.
                net.to(memory_format=torch.channels_last)
            if self.compile_nets:
                net.compile()

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
        configs = []
        for opt in optimizers:
            config: dict = {"optimizer": opt}
            if self.scheduler_factory is not None:
                config["lr_scheduler"] = {"scheduler": self.scheduler_factory(opt)}
            configs.append(config)
        return configs

    def on_train_start(self) -> None:
        # Every DDP rank was seeded alike; give each its own noise stream, or all ranks would
        # draw the same latents and extra GPUs would not enlarge the fake batch.
        if self.trainer.world_size > 1:
            torch.manual_seed(torch.initial_seed() + self.global_rank)
        if self.privacy is not None:
            self._start_privacy()

    # --- differential privacy (genlab.models.privacy) -----------------------------------------
    def private_nets(self) -> dict[str, torch.nn.Module]:
        """The nets that see real images and are trained with DP-SGD under model.privacy."""
        raise ConfigError(f"model.privacy is not supported by {type(self).__name__}.")

    def _start_privacy(self) -> None:
        trainer = self.trainer
        if trainer.world_size > 1 or "16" in str(trainer.precision):
            raise ConfigError(
                "model.privacy.enabled=true runs on one device in 32-bit or bf16 precision "
                f"(this trainer: {trainer.world_size} processes, precision {trainer.precision}):"
                " the per-sample clipping does not see DDP's or the fp16 scaler's gradients."
            )
        max_epochs = trainer.max_epochs
        if self.privacy.noise_multiplier is None and (max_epochs is None or max_epochs < 1):
            raise ConfigError(
                "model.privacy.noise_multiplier=null spreads target_epsilon over "
                "trainer.max_epochs: set trainer.max_epochs (or give the noise)."
            )
        self.privacy.start(
            self.private_nets(),
            trainer.train_dataloader,
            max_epochs or 0,
            trainer.num_training_batches,  # limit_train_batches included
        )

    def on_fit_end(self) -> None:
        if self.privacy is not None:
            self.privacy.stop()

    def private_pass(self) -> AbstractContextManager:
        """Forward/backward passes of the private nets inside get per-sample gradients
        (a no-op without privacy)."""
        return self.privacy.recording() if self.privacy is not None else nullcontext()

    def on_train_batch_start(self, batch, batch_idx: int) -> int | None:
        privacy = self.privacy
        if privacy is not None and privacy.budget_reached() and privacy.over_budget_action():
            # -1 ends the epoch before this batch (should_stop alone waits for min_epochs):
            # no private step beyond the budget. train/epsilon follows at the epoch's end.
            self.trainer.should_stop = True
            return -1
        return None

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.privacy is not None:  # the budget spent so far travels with the weights
            checkpoint["privacy"] = self.privacy.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if self.privacy is not None and "privacy" in checkpoint:
            self.privacy.load_state_dict(checkpoint["privacy"])

    def on_train_epoch_end(self) -> None:
        if self.privacy is not None:
            self.log("train/epsilon", self.privacy.epsilon())
        # Manual optimisation: Lightning does not step schedulers for us. They step once per
        # epoch (so per-step schedules such as OneCycleLR do not fit here).
        schedulers = self.lr_schedulers()
        if schedulers is None:
            return
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                value = self.trainer.callback_metrics.get(self.monitor)
                if value is not None:  # no validation this epoch: nothing to react to
                    scheduler.step(value)
            else:
                scheduler.step()

    def logging_step(self, batch_idx: int) -> bool:
        """Log per-step training metrics on this batch? Only on the batches a logger records
        (every ``trainer.log_every_n_steps``) and on an epoch's last: each ``self.log`` costs
        ~1 ms of Python, more than a small net's whole step on a GPU."""
        trainer = self._trainer
        if trainer is None or batch_idx + 1 >= trainer.num_training_batches:
            return True
        connector = getattr(trainer, "_logger_connector", None)  # private API: else log always
        return connector is None or bool(connector.should_update_logs)

    def backward_and_step(
        self, loss: torch.Tensor, optimizer, name: str, private: bool = False
    ) -> None:
        """zero_grad -> backward -> step (clipping in between, see below), after refusing a
        non-finite loss. ``private``: the step of the DP-SGD nets, inside ``private_pass``."""
        self.check_finite(loss, name)
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if private and self.privacy is not None:
            self.privacy.check_per_sample(optimizer)
        optimizer.step()

    def on_before_optimizer_step(self, optimizer) -> None:
        # Clip here, inside optimizer.step(): under 16-mixed the precision plugin unscales the
        # gradients just before this hook, so clipping earlier would clip the scaled norm.
        if self.gradient_clip_val:
            self.clip_gradients(optimizer, gradient_clip_val=self.gradient_clip_val)

    def check_finite(self, loss: torch.Tensor, name: str) -> None:
        """Stop with advice on a NaN/Inf loss, before it reaches the weights."""
        # One host sync per step: cheap on CPU; worth revisiting for GPU throughput.
        if not torch.isfinite(loss):
            raise DivergenceError(
                f"{name} is {loss.item()} at global step {self.global_step} (epoch "
                f"{self.current_epoch}). Training diverged: lower the learning rate "
                "(model.optimizer.lr=...), set model.gradient_clip_val=1.0, or check the input "
                "data for NaNs; resume from the last good checkpoint: "
                f"ckpt_path={last_good_checkpoint(self._trainer)}"
            )
