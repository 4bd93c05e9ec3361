"""cifarkit: CIFAR-10/100 experiments as a small library behind a numbered notebook series."""

from .config import TrainConfig
from .data import load_dataset
from .engine import fit
from .errors import CifarkitError
from .evaluation import evaluate
from .models import create_model, list_models

__all__ = ["CifarkitError", "TrainConfig", "create_model", "evaluate", "fit", "list_models", "load_dataset"]
__version__ = "0.1.0"
