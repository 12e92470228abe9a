"""Did-you-mean: the names a user probably meant, for an unknown config key (``cli``) and for
a value outside a rule's choices (``rules.OneOf``)."""

from __future__ import annotations

import difflib


def closest_keys(key: str, keys: list[str], n: int = 3) -> list[str]:
    """Up to ``n`` of ``keys`` (dotted paths) that ``key`` was probably meant to be, from the
    first of: a near spelling beside it (``model.lattent_dim`` -> ``model.latent_dim``); the
    same name deeper under the same top-level key (``model.lr`` -> ``model.optimizer.lr``); a
    near spelling of the whole path."""
    parent, _, leaf = key.rpartition(".")
    prefix = f"{parent}." if parent else ""
    siblings = [k.removeprefix(prefix) for k in keys if k.startswith(prefix)]
    siblings = [s for s in siblings if "." not in s]
    ratio = {s: difflib.SequenceMatcher(None, leaf, s).ratio() for s in siblings}
    # The nearest spellings only: metrcs -> metrics, not extras as well.
    cutoff = max(0.6, max(ratio.values(), default=0.0) - 0.1)
    beside = sorted((s for s in ratio if ratio[s] >= cutoff), key=ratio.__getitem__, reverse=True)
    beside = [prefix + s for s in beside[:n]]
    top = key.partition(".")[0]
    deeper = [k for k in keys if k.startswith(f"{top}.") and k.rpartition(".")[2] == leaf]
    return beside or deeper[:n] or difflib.get_close_matches(key, keys, n, 0.8)
