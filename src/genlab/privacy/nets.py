"""The private nets: which nets of a model see real images, rebuilding them so that DP-SGD can
train them, and the per-sample gradient hooks on them during fit.

A model names its private nets in ``private_nets()`` (docs/models.md) and refuses its own
settings DP-SGD cannot honour in ``check_private_training()``. BatchNorm layers (they mix the
images of a batch) become GroupNorm, in-place activations are turned off (Opacus' backward
hooks cannot see through them), and layers Opacus cannot handle are refused. The per-sample
hooks are kept out of the module tree, so checkpoint keys do not change.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping

from torch import nn

from genlab.errors import ConfigError

log = logging.getLogger(__name__)


def private_nets(model: nn.Module) -> dict[str, nn.Module]:
    """The model's nets that see real images (attribute name -> net)."""
    declared = getattr(model, "private_nets", None)
    if declared is None:
        raise ConfigError(
            f"privacy.enabled=true: {type(model).__name__} does not declare which nets see "
            "real images (private_nets(), docs/models.md), so DP-SGD cannot train it. Set "
            "privacy.enabled=false, or add private_nets() to the model."
        )
    return declared()


def make_private(net: nn.Module, role: str) -> nn.Module:
    """``net`` ready for per-sample gradients: BatchNorm -> GroupNorm, in-place activations
    off; unsupported layers refused (``role`` names the net in messages)."""
    from opacus.validators import ModuleValidator
    from torch.nn.utils import parametrize

    # Spectral/weight norm compute the weight in the forward pass: the per-sample hooks
    # would see the computed weight, not the parameters that are stepped.
    parametrized = [
        n or "(the net)" for n, m in net.named_modules() if parametrize.is_parametrized(m)
    ]
    if parametrized:
        raise ConfigError(
            f"privacy.enabled=true: the {role}'s layers {', '.join(parametrized)} have "
            "weight parametrisations (spectral or weight norm), which DP-SGD's per-sample "
            f"gradients do not support. Build the {role} without them (model.spectral_norm="
            "false) or disable privacy."
        )
    batch_norms = nn.modules.batchnorm._BatchNorm
    swapped = [n for n, m in net.named_modules() if isinstance(m, batch_norms)]
    if swapped:
        net = ModuleValidator.fix(net)
        log.info("privacy: %s BatchNorm -> GroupNorm at %s", role, ", ".join(swapped))
    for module in net.modules():
        if getattr(module, "inplace", False):
            module.inplace = False
    errors = ModuleValidator.validate(net, strict=False)
    if errors:
        raise ConfigError(
            f"privacy.enabled=true: the {role} has layers DP-SGD cannot train: "
            + "; ".join(str(e) for e in errors)
            + f". Use a {role} without them (e.g. norm: layer) or disable privacy."
        )
    return net


def rebuild(model: nn.Module) -> None:
    """Refuse the model's settings DP-SGD cannot honour and replace each private net by its
    ``make_private`` version (the rebuilt nets have other state-dict keys: do it before any
    weights are loaded)."""
    check = getattr(model, "check_private_training", None)
    if check is not None:
        check()
    for name, net in private_nets(model).items():
        setattr(model, name, make_private(net, name))


class PerSampleHooks:
    """Opacus' per-sample gradient hooks on ``nets`` for the length of a fit."""

    def __init__(self, nets: Mapping[str, nn.Module]) -> None:
        from opacus.grad_sample import GradSampleModule

        # The first layer's input needs no gradient; Opacus' hook fires anyway, as intended.
        warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients")
        self._hooks = [(net, GradSampleModule(net)) for net in nets.values()]

    def record_trainable_only(self) -> None:
        """Before a backward pass: record per-sample gradients only for nets being trained. A
        GAN's generator step runs through D too, with D frozen, and must neither record nor
        fail."""
        for net, hooks in self._hooks:
            if any(p.requires_grad for p in net.parameters()):
                hooks.enable_hooks()
            else:
                hooks.disable_hooks()

    def record_all(self) -> None:
        """After a backward pass: forward passes record again (frozen nets are skipped)."""
        for _, hooks in self._hooks:
            hooks.enable_hooks()

    def remove(self) -> None:
        """Hooks and stored per-sample gradients removed (end of fit)."""
        for _, hooks in self._hooks:
            hooks.to_standard_module()
        self._hooks = []
