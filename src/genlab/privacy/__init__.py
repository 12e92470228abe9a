"""Differentially private training (DP-SGD): ``privacy.enabled=true`` (docs/privacy.md)."""

from genlab.privacy.callback import DifferentialPrivacy

__all__ = ["DifferentialPrivacy"]
