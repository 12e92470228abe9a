"""Ex-post density estimation for a VAE's samples (Ghosh et al., 2020): a Gaussian with full
covariance fitted to the posterior means of the training images, one per class for a
conditional model, to draw sampling codes from where real images' codes lie.

A VAE's posterior means rarely fill its prior N(0, I): prior draws that fall between them
decode to blends (for a conditional VAE, often of another class). Drawing z from the fitted
Gaussian instead keeps samples in the encoded region. It is a sampling distribution only: the
ELBO, the KL and the likelihood bound keep the model's prior.

The sums are taken during each training epoch from the batches the model trains on (no extra
pass over the data) and are buffers, so a run resumed mid-epoch continues them and a
checkpoint carries the fitted Gaussian. Each fit uses the current epoch's sums.
"""

from __future__ import annotations

import torch
from torch import nn


class ExPostGaussian(nn.Module):
    """Per-class mean and Cholesky factor of the training codes; ``transform`` maps standard
    normal noise to them, so a seeded sample stays a function of its seed."""

    def __init__(self, classes: int, latent_dim: int, jitter: float = 1e-5) -> None:
        super().__init__()
        self.jitter = jitter
        k, d = max(classes, 1), latent_dim
        # Sums of the current epoch, in float64: 60k outer products lose nothing.
        self.register_buffer("count", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("total", torch.zeros(k, d, dtype=torch.float64))
        self.register_buffer("outer", torch.zeros(k, d, d, dtype=torch.float64))
        self.register_buffer("sums_epoch", torch.tensor(-1, dtype=torch.long))
        # The fitted Gaussians; N(0, I) until the first fit.
        self.register_buffer("mean", torch.zeros(k, d))
        self.register_buffer("scale_tril", torch.eye(d).repeat(k, 1, 1))
        self.register_buffer("fitted", torch.tensor(False))

    @torch.no_grad()
    def accumulate(self, codes: torch.Tensor, labels: torch.Tensor | None, epoch: int) -> None:
        """Add a training batch's posterior means; the first batch of an epoch starts over."""
        if int(self.sums_epoch) != epoch:
            self.count.zero_(), self.total.zero_(), self.outer.zero_()
            self.sums_epoch.fill_(epoch)
        codes = codes.detach().to(torch.float64)
        index = _rows(codes, labels)
        self.count.index_add_(0, index, torch.ones_like(index, dtype=torch.float64))
        self.total.index_add_(0, index, codes)
        self.outer.index_add_(0, index, codes.unsqueeze(2) * codes.unsqueeze(1))

    @torch.no_grad()
    def fit(self, count: torch.Tensor, total: torch.Tensor, outer: torch.Tensor) -> None:
        """Mean and covariance from the sums (all ranks' under DDP). A class with fewer than
        two codes keeps its previous Gaussian."""
        d = total.shape[1]
        eye = torch.eye(d, dtype=torch.float64, device=total.device)
        for k in range(len(count)):
            n = float(count[k])
            if n < 2:
                continue
            mean = total[k] / n
            cov = (outer[k] - n * torch.outer(mean, mean)) / (n - 1)
            cov = 0.5 * (cov + cov.T) + self.jitter * eye
            tril, info = torch.linalg.cholesky_ex(cov)
            if int(info) != 0:  # not positive definite (too few codes): its variances alone
                tril = torch.diag(cov.diagonal().clamp(min=self.jitter).sqrt())
            self.mean[k] = mean.to(self.mean.dtype)
            self.scale_tril[k] = tril.to(self.scale_tril.dtype)
        self.fitted.fill_(True)

    def transform(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Standard-normal ``z`` ``[N, D]`` -> codes from the fitted Gaussian of each label."""
        index = _rows(z, labels)
        mean, tril = self.mean[index].to(z.dtype), self.scale_tril[index].to(z.dtype)
        return mean + (tril @ z.unsqueeze(-1)).squeeze(-1)


def _rows(codes: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """Which Gaussian each code belongs to: its label, or the only one (unconditional)."""
    if labels is not None:
        return labels.long()
    return torch.zeros(len(codes), dtype=torch.long, device=codes.device)
