"""Variational autoencoder LightningModule with manual optimisation.

    python train.py model=vae                         # Bernoulli decoder, latent 16
    python train.py model=vae model.likelihood=gaussian model.beta=4

Reports the ELBO per image in nats (``train/elbo``, ``val/elbo``; higher is better) with its
reconstruction and KL terms separately. ``beta`` weights the KL in the *loss* only; the
reported ELBO is always the true bound (beta = 1), so runs with different betas compare.
Validation and test add the importance-weighted bound on the negative log-likelihood
(``val/nll_nats`` with ``iwae_samples_val`` samples per image, ``test/nll_nats`` and
``test/bits_per_dim`` with ``iwae_samples_test``; Burda et al., 2016) and the SSIM and PSNR of
reconstructions (``{val,test}/ssim``, ``{val,test}/psnr``).

The decoder is either a net ``z -> logits`` (``nets/conv.py``) or an *autoregressive* one that
says so with ``autoregressive = True`` (``nets/pixelcnn.py``, ``model=pixel_vae``): it scores
images with ``decoder(z, x) -> logits``, each pixel's logit seeing z and the pixels before it
only (teacher forcing: one pass), and draws images with ``decoder.sample(z, noise)``, pixel by
pixel. The bound, the training step and everything else are the same for both.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Annotated, Any

import torch
from torch import nn
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from genlab.config.rules import NON_NEGATIVE, POSITIVE
from genlab.errors import ConfigError
from genlab.models.base import GenerativeModel, OptimizerFactory, refused_with_privacy
from genlab.models.ex_post import ExPostGaussian
from genlab.models.losses import (
    bernoulli_log_likelihood,
    gaussian_kl,
    gaussian_kl_per_dim,
    gaussian_log_likelihood,
)

LIKELIHOODS = ("bernoulli", "gaussian")
# KL weight over training: constant beta; linear warm-up 0 -> beta over kl_warmup_epochs;
# cyclical (Fu et al., 2019): repeated ramps, each cycle 2 * kl_warmup_epochs long.
KL_SCHEDULES = ("constant", "linear", "cyclical")


def split_posterior(h: torch.Tensor, latent_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An encoder's output ``[N, 2 * latent_dim]`` -> (mean, log-variance) of q(z | x)."""
    if h.shape[1] != 2 * latent_dim:
        raise ConfigError(
            f"encoder returns {h.shape[1]} features but the VAE needs 2 * latent_dim = "
            f"{2 * latent_dim}: set the encoder's out_features to 2 * model.latent_dim."
        )
    mu, logvar = h.chunk(2, dim=1)
    return mu, logvar


class VAE(GenerativeModel):
    monitor = "val/elbo"
    monitor_mode = "max"
    # Computed by test_step: the likelihood bound (nll) and reconstruction SSIM/PSNR (recon).
    model_metrics = ("nll", "recon")

    def __init__(
        self,
        *,
        encoder: nn.Module,
        decoder: nn.Module,
        optimizer: OptimizerFactory,
        likelihood: str = "bernoulli",
        gaussian_sigma: Annotated[float, POSITIVE] | None = None,
        beta: Annotated[float, NON_NEGATIVE] = 1.0,
        iwae_samples_val: Annotated[int, NON_NEGATIVE] = 10,
        iwae_samples_test: Annotated[int, NON_NEGATIVE] = 50,
        kl_schedule: str = "constant",
        kl_warmup_epochs: Annotated[float, NON_NEGATIVE] = 0.0,
        free_bits: Annotated[float, NON_NEGATIVE] = 0.0,
        class_prior: bool = False,
        ex_post_prior: bool = False,
        **base: Any,  # latent_dim, monitor, scheduler, ...: see GenerativeModel
    ) -> None:
        super().__init__(**base)
        if likelihood not in LIKELIHOODS:
            raise ConfigError(f"model.likelihood={likelihood!r}: choose one of {LIKELIHOODS}.")
        if kl_schedule not in KL_SCHEDULES:
            raise ConfigError(f"model.kl_schedule={kl_schedule!r}: choose one of {KL_SCHEDULES}.")
        if kl_schedule != "constant" and kl_warmup_epochs <= 0:
            raise ConfigError(f"model.kl_schedule={kl_schedule} needs model.kl_warmup_epochs > 0.")
        self.check_label_nets(encoder=encoder, decoder=decoder)
        self.encoder = encoder
        self.decoder = decoder
        self.autoregressive = bool(getattr(decoder, "autoregressive", False))
        if self.autoregressive and self.num_classes:
            raise ConfigError(
                f"model.num_classes={self.num_classes} with an autoregressive decoder "
                f"({type(decoder).__name__}): its pixel-by-pixel sampler takes no labels; use "
                "model=cvae (a factorised conditional decoder) or model.num_classes=0."
            )
        if self.autoregressive and likelihood != "bernoulli":
            raise ConfigError(
                f"model.likelihood={likelihood!r} with an autoregressive decoder "
                f"({type(decoder).__name__}): it models binary pixels, use "
                "model.likelihood=bernoulli."
            )
        self.optimizer_factory = optimizer
        self.likelihood, self.gaussian_sigma = likelihood, gaussian_sigma
        self.beta = beta
        self.kl_schedule, self.kl_warmup_epochs, self.free_bits = (
            kl_schedule,
            kl_warmup_epochs,
            free_bits,
        )
        if class_prior and not self.num_classes:
            raise ConfigError(
                "model.class_prior=true needs classes (model.num_classes > 0, model=cvae): an "
                "unconditional VAE has one prior, N(0, I)."
            )
        # A conditional VAE's prior p(z | y) = N(mu_y, diag sigma_y^2), learned with the rest
        # (zeros: it starts as N(0, I)). Samples of class y then come from where the posteriors
        # of class y's images lie, not from a prior shared by every class.
        self.class_prior = (
            nn.Embedding(self.num_classes, 2 * self.latent_dim) if class_prior else None
        )
        if self.class_prior is not None:
            nn.init.zeros_(self.class_prior.weight)
        # Samples from a Gaussian fitted to the training codes (per class), not from the prior.
        self.ex_post = ExPostGaussian(self.num_classes, self.latent_dim) if ex_post_prior else None
        # Importance samples per image for the likelihood bound; 0 switches it off.
        self.iwae_samples = {"val": iwae_samples_val, "test": iwae_samples_test}
        if likelihood == "gaussian":
            # One shared sigma, learned unless fixed ("calibrated decoder", Rybkin et al., 2021):
            # a fixed sigma = 1 on [0, 1] images would let the KL term swamp the reconstruction.
            if gaussian_sigma is None:
                self.log_sigma = nn.Parameter(torch.tensor(math.log(0.1)))
            else:
                self.register_buffer("log_sigma", torch.tensor(math.log(gaussian_sigma)))

    @property
    def logged_metrics(self) -> tuple[str, ...]:
        """What training and validation log, as the settings decide (``val/fid`` comes from
        callbacks.fid)."""
        train = ["train/elbo", "train/recon", "train/kl"]
        train += ["train/kl_weight"] if self.kl_schedule != "constant" else []
        train += ["train/sigma"] if self.likelihood == "gaussian" else []
        val = ["val/elbo", "val/recon", "val/kl", "val/ssim", "val/psnr"]
        val += ["val/nll_nats", "val/bits_per_dim"] if self.iwae_samples["val"] > 0 else []
        return (*train, *val)

    def configure_optimizers(self):
        return self._with_schedulers([self.optimizer_factory(self.parameters())])

    def private_nets(self) -> dict[str, nn.Module]:
        nets = {"encoder": self.encoder, "decoder": self.decoder}
        if self.class_prior is not None:  # trained on the images' labels: private as well
            nets["class_prior"] = self.class_prior
        return nets

    def check_private_training(self) -> None:
        super().check_private_training()
        if self.free_bits:  # a clamp of the batch-mean KL: not a sum of per-image losses
            raise refused_with_privacy(
                "free_bits", self.free_bits, "its batch-mean clamp mixes images, so per-image "
                "gradients would not bound one image's influence. Set model.free_bits=0."
            )  # fmt: skip
        if self.autoregressive:  # e.g. PixelCNNDecoder masks its conv weights in forward
            raise refused_with_privacy(
                "decoder", type(self.decoder).__name__, "its masked weights are outside "
                "Opacus' per-sample hooks, and noise on them would let pixels see themselves. "
                "Use a factorised decoder (model=vae)."
            )  # fmt: skip
        if self.ex_post is not None:
            raise refused_with_privacy(
                "ex_post_prior", True, "it fits a Gaussian to the training images' codes outside "
                "DP-SGD, so samples would reveal them. Set model.ex_post_prior=false."
            )  # fmt: skip
        if self.likelihood == "gaussian" and self.gaussian_sigma is None:
            raise refused_with_privacy(
                "gaussian_sigma", None, "DP-SGD trains encoder and decoder; the learned "
                "Gaussian sigma sits outside them. Fix it (model.gaussian_sigma=0.1) or use "
                "model.likelihood=bernoulli."
            )  # fmt: skip

    def prepare_test(self, metrics: Sequence[str], nll_samples: int) -> None:
        self.iwae_samples["test"] = nll_samples if "nll" in metrics else 0

    # --- the VAE interface --------------------------------------------------------------------
    def encode(
        self, x: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images in [0, 1] (and their classes, conditional) -> posterior mean and
        log-variance, each ``[N, latent_dim]``."""
        return split_posterior(self.conditioned(self.encoder, x, labels), self.latent_dim)

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Latents -> mean images in [0, 1]. The decoder returns logits (Bernoulli) or the
        Gaussian mean before a sigmoid: both likelihoods keep their mean in [0, 1].

        An autoregressive decoder draws each image pixel by pixel and returns each pixel's
        probability given z and the pixels drawn before it (the mean of the last step, anti-
        aliased like a factorised decoder's mean). Its pixel noise is a function of the latent
        (``pixel_noise``): the same z gives the same image, in any batch, on any device."""
        if self.autoregressive:
            return self.decoder.sample(z, self.pixel_noise(z))[1]
        return torch.sigmoid(self.conditioned(self.decoder, z, labels))

    def pixel_noise(self, z: torch.Tensor) -> torch.Tensor:
        """Uniforms ``[N, C, H, W]`` for an autoregressive decoder's draws, seeded by each
        latent row's bytes: seeded samples (``metrics.sampling.draw``) call ``generate(z)``
        with no generator, and must not depend on the batch size or the device."""
        rows = z.detach().to("cpu", torch.float64).numpy()
        noise = [
            torch.rand(
                self.decoder.image_shape,
                generator=torch.Generator().manual_seed(
                    int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "big")
                    >> 1  # manual_seed takes a non-negative int64
                ),
            )
            for row in rows
        ]
        return torch.stack(noise).to(z.device, z.dtype)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images (and their classes, conditional) -> decoded posterior means, in [0, 1]."""
        mu, _ = self.encode(x, labels)
        return self.decode(mu, labels)

    def prior(
        self, labels: torch.Tensor | None, like: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The learned prior's (mean, log-variance) for ``labels``, shaped like ``like``; None
        for the standard normal prior."""
        if self.class_prior is None or labels is None:
            return None
        mu, logvar = self.class_prior(labels).to(like.dtype).chunk(2, dim=-1)
        return mu, logvar

    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Standard-normal noise ``z`` -> images: with ``ex_post_prior``, z is first moved to
        the Gaussian fitted to the training codes (of class y); with a learned class prior, to
        p(z | y). The decoder's mean, not a Bernoulli draw: the usual way to show VAE
        samples."""
        if self.ex_post is not None and bool(self.ex_post.fitted):
            z = self.ex_post.transform(z, labels)
        elif (prior := self.prior(labels, z)) is not None:
            z = prior[0] + torch.exp(0.5 * prior[1]) * z
        return self.decode(z, labels)

    def relative_posterior(
        self, mu: torch.Tensor, logvar: torch.Tensor, labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z | x, y) in the coordinates where the prior is N(0, I): KL(q || p(z | y)) is the
        standard ``gaussian_kl`` of these (a KL is unchanged by one affine map of both)."""
        if (prior := self.prior(labels, mu)) is None:
            return mu, logvar
        p_mu, p_logvar = prior
        return (mu - p_mu) * torch.exp(-0.5 * p_logvar), logvar - p_logvar

    # --- the bound ----------------------------------------------------------------------------
    def decoder_output(
        self, z: torch.Tensor, x: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The decoder's raw output for latents ``z`` scoring images ``x`` (one per latent):
        an autoregressive decoder sees ``x`` too (teacher forcing), a conditional one the
        images' classes."""
        if self.autoregressive:
            return self.decoder(z, x)
        return self.conditioned(self.decoder, z, labels)

    def log_likelihood(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x | z) per image from the raw decoder output ``out``."""
        if self.likelihood == "bernoulli":
            return bernoulli_log_likelihood(out, x)
        return gaussian_log_likelihood(torch.sigmoid(out), self.log_sigma, x)

    def elbo_terms(
        self, x: torch.Tensor, labels: torch.Tensor | None = None, record: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """One-sample estimate of (log p(x|z), KL(q(z|x) || p(z))) per image, in nats, and the
        posterior parameters (mu, logvar); a conditional model's terms are given y, its bound
        one on log p(x | y). ``record`` (training batches): add the posterior means to the
        ex-post Gaussian's sums."""
        mu, logvar = self.encode(x, labels)
        if record and self.ex_post is not None:
            self.ex_post.accumulate(mu, labels, self.current_epoch)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)  # reparameterisation
        log_px = self.log_likelihood(self.decoder_output(z, x, labels), x)
        mu, logvar = self.relative_posterior(mu, logvar, labels)  # against p(z | y)
        return log_px, gaussian_kl(mu, logvar), (mu, logvar)

    @torch.no_grad()
    def iwae_bound(
        self,
        x: torch.Tensor,
        k: int,
        max_batch: int = 8192,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Importance-weighted lower bound on log p(x) per image, in nats (Burda et al., 2016):
        log (1/k) sum_i p(x, z_i) / q(z_i | x), z_i ~ q(z | x). k = 1 is the ELBO; the bound
        tightens towards log p(x) as k grows. Decodes at most ``max_batch`` latents at once.
        With ``labels`` (a conditional model) every term is given y: a bound on log p(x | y)."""
        mu, logvar = self.encode(x, labels)
        std = torch.exp(0.5 * logvar)
        prior = self.prior(labels, mu)
        n = len(x)
        per_chunk = max(1, max_batch // n)
        log_w = []
        for start in range(0, k, per_chunk):
            eps = torch.randn(min(per_chunk, k - start), *mu.shape, device=mu.device)
            z = mu + eps * std  # [k', N, D]
            log_q = -0.5 * (eps.pow(2) + logvar + math.log(2 * math.pi)).sum(-1)
            if prior is None:
                log_p_z = -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(-1)
            else:  # log N(z; mu_y, sigma_y^2)
                p_mu, p_logvar = prior
                u = (z - p_mu) * torch.exp(-0.5 * p_logvar)
                log_p_z = -0.5 * (u.pow(2) + p_logvar + math.log(2 * math.pi)).sum(-1)
            xs = x.repeat(len(eps), 1, 1, 1)  # row i * n + j is image j, as in z.flatten(0, 1)
            ys = None if labels is None else labels.repeat(len(eps))
            log_p_x = self.log_likelihood(self.decoder_output(z.flatten(0, 1), xs, ys), xs)
            log_p_x = log_p_x.view(len(eps), n)
            log_w.append(log_p_x + log_p_z - log_q)
        return torch.logsumexp(torch.cat(log_w), dim=0) - math.log(k)

    def kl_weight(self, batch_idx: int = 0) -> float:
        """The KL weight of the training loss now (beta times the schedule's factor)."""
        if self.kl_schedule == "constant":
            return self.beta
        trainer = self.attached_trainer()
        batches = max(1, trainer.num_training_batches) if trainer else 1
        progress = self.current_epoch + batch_idx / batches  # in epochs
        if self.kl_schedule == "cyclical":
            progress = progress % (2 * self.kl_warmup_epochs)
        return self.beta * min(1.0, progress / self.kl_warmup_epochs)

    def kl_penalty(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """The KL term of the loss. With free bits (Kingma et al., 2016) each latent dimension's
        batch-mean KL below ``free_bits`` nats costs nothing, so no dimension is pushed to
        collapse onto the prior."""
        if self.free_bits:
            return gaussian_kl_per_dim(mu, logvar).mean(0).clamp(min=self.free_bits).sum()
        return gaussian_kl(mu, logvar).mean()

    def _step(
        self, x: torch.Tensor, stage: str, batch_idx: int = 0, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        log_px, kl, (mu, logvar) = self.elbo_terms(x, labels, record=stage == "train")
        weight = self.kl_weight(batch_idx) if stage == "train" else self.beta
        loss = -log_px.mean() + weight * self.kl_penalty(mu, logvar)
        if stage == "train" and not self.logging_step(batch_idx):
            return loss
        if stage == "train" and self.kl_schedule != "constant":
            self.log("train/kl_weight", weight)
        # Training: per-step values. Validation/test: epoch means, averaged over DDP ranks.
        opts = {"on_epoch": stage != "train", "sync_dist": stage != "train"}
        self.log(f"{stage}/elbo", (log_px - kl).mean(), prog_bar=True, **opts)
        self.log(f"{stage}/recon", -log_px.mean(), **opts)
        self.log(f"{stage}/kl", kl.mean(), **opts)
        if self.likelihood == "gaussian" and stage == "train":
            self.log("train/sigma", self.log_sigma.exp())
        return loss

    def fit_ex_post(self) -> None:
        """Fit the ex-post Gaussian to this epoch's sums so far (every rank's under DDP)."""
        if self.ex_post is None:
            return
        sums = (self.ex_post.count, self.ex_post.total, self.ex_post.outer)
        trainer = self.attached_trainer()
        if trainer is not None and trainer.world_size > 1:
            sums = tuple(trainer.strategy.reduce(s.clone(), reduce_op="sum") for s in sums)
        if float(sums[0].sum()) > 0:
            self.ex_post.fit(*sums)

    def on_validation_epoch_start(self) -> None:
        # Before the FID monitor samples and the checkpoint is written (both at validation).
        if not self.trainer.sanity_checking and self.trainer.state.fn == "fit":
            self.fit_ex_post()

    def on_train_epoch_end(self) -> None:
        self.fit_ex_post()  # runs without validation too

    def training_step(self, batch, batch_idx: int) -> None:
        loss = self._step(batch[0], "train", batch_idx, self.batch_labels(batch))
        self.backward_and_step(loss, self.optimizers(), "train/loss")

    def _evaluate(self, x: torch.Tensor, stage: str, labels: torch.Tensor | None) -> None:
        self._step(x, stage, labels=labels)
        opts = {"on_epoch": True, "sync_dist": True}
        k = self.iwae_samples[stage]
        if k > 0:
            nll = -self.iwae_bound(x, k, labels=labels).mean()
            self.log(f"{stage}/nll_nats", nll, **opts)
            dims = x[0].numel()
            # Gaussian decoders model a density on [0, 1] pixels: add log 256 per dim for the
            # usual 8-bit bits/dim (exact only with dequantised data).
            offset = dims * math.log(256) if self.likelihood == "gaussian" else 0.0
            self.log(f"{stage}/bits_per_dim", (nll + offset) / (dims * math.log(2)), **opts)
        recon = self.reconstruct(x, labels)
        self.log(
            f"{stage}/ssim", structural_similarity_index_measure(recon, x, data_range=1.0), **opts
        )
        psnr = peak_signal_noise_ratio(recon, x, data_range=1.0, reduction="none", dim=(1, 2, 3))
        self.log(f"{stage}/psnr", psnr.mean(), **opts)

    def validation_step(self, batch, batch_idx: int) -> None:
        with self.evaluation_rng(batch_idx):
            self._evaluate(batch[0], "val", self.batch_labels(batch))

    def test_step(self, batch, batch_idx: int) -> None:
        with self.evaluation_rng(batch_idx):
            self._evaluate(batch[0], "test", self.batch_labels(batch))
