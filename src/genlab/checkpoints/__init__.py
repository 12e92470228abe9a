"""Checkpoints as untrusted input: what a stored config may build (``trust``)."""
