"""genlab: a Hydra + PyTorch Lightning template for generative image models."""

from genlab import resolvers as _resolvers  # noqa: F401  (registers ${project_root:} etc.)

__version__ = "0.1.0"
