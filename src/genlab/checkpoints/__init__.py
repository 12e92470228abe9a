"""Checkpoints: what genlab adds to them, how they are written, and how they are read back as
untrusted input.

- ``keys``: the registry of every custom top-level checkpoint key (owner, contents);
- ``io``: Lightning's checkpoint writer made atomic, its reader weights-only;
- ``load``: ``read_checkpoint``, ``stored_config``, ``load_model``, ``check_fits``;
- ``build``: ``build_model``, the model (privacy-prepared) as training and loading build it;
- ``trust``: what a stored config may build, checked before anything is built from it;
- ``moved``: old stored ``_target_``s renamed before that check;
- ``pretrained``: the shipped checkpoints of ``pretrained/``, by name, SHA256-checked.

Nothing is imported here: ``genlab.checkpoints.keys`` stays cheap for the modules that only
name a key (``genlab.load_model`` is the public entry point for loading).
"""
