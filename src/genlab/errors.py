"""Errors a user can fix. Entry points print them as one line instead of a traceback."""


class GenlabError(Exception):
    """Base class: a problem with the user's config, data or files, not a bug in genlab."""


class ConfigError(GenlabError, ValueError):
    """A config option is invalid (the message names the option and the valid choices).

    Also a ``ValueError``, so code that builds objects by hand can catch it the usual way."""


class DataError(GenlabError):
    """A dataset is missing or unreadable (the message names the files and where they go)."""


class CheckpointError(GenlabError):
    """A checkpoint cannot be used (missing, or not written by genlab)."""


class DivergenceError(GenlabError, FloatingPointError):
    """Training diverged (NaN/Inf loss, exploding gradients): the message says where to resume."""


class RunDirBusy(GenlabError):
    """Another live run is writing into the run directory."""


class ContractError(GenlabError):
    """A model breaks a row of the model contract (docs/models.md), found before training."""
