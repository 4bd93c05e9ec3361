"""cifarkit: CIFAR-10/100 experiments as a small library behind a numbered notebook series.

The core, in the order a learner reads it: ``config`` (every setting and named recipe) -> ``device`` ->
``data`` (uint8 tensors, splits) -> ``loader`` (device-resident, batch-augmented) -> ``models`` ->
``train`` (one step, one epoch, ``fit``) -> ``evaluate`` (metrics, TTA) -> ``predict`` and ``variants``
(using a checkpoint) -> ``runs`` (the run folder's files) and ``errors``. On top of it stand
``speedrun/``, ``tools/`` and ``report/``; the README's module map says what each holds.

The names below load on first use, so ``python -m cifarkit --help`` answers without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
_EXPORTS = {
    "CifarkitError": "cifarkit.errors",
    "TrainConfig": "cifarkit.config",
    "recipe": "cifarkit.config",
    "create_model": "cifarkit.models",
    "list_models": "cifarkit.models",
    "fit": "cifarkit.train",
    "load_dataset": "cifarkit.data",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """``cifarkit.fit`` and friends, imported from their module the first time they are asked for."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'cifarkit' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
