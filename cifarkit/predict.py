"""Predict classes of real image files (or arrays) with a checkpoint, optionally with test-time augmentation."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cifarkit.config import EVAL_BATCH_SIZE, TOP_K, check_value, positive_int
from cifarkit.data import Dataset, Split, decode_image, image_files, pil_to_array, resolve_user_path
from cifarkit.device import resolve_channels_last, resolve_device
from cifarkit.errors import CheckpointError, CifarkitError, ConfigError, DataError, first_line, short_list
from cifarkit.evaluate import compare_tta, evaluate, predict_logits, ranked_classes, tta_forward
from cifarkit.loader import DeviceLoader, Normalizer
from cifarkit.runs import load_checkpoint, test_json, write_run_file
from cifarkit.variants import OnnxModel, model_from_blob


@dataclass
class Predictor:
    """A checkpoint's model with the preprocessing it was trained with."""

    model: nn.Module
    classes: list[str]
    normalizer: Normalizer
    data_size: int
    device: torch.device
    meta: dict[str, Any]  # the checkpoint without its weights: model name, config, normalisation...
    path: Path

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "auto") -> Predictor:
        """Load ``path`` onto ``device``: a cifarkit checkpoint of any variant (``best.pt``, pruned, int8;
        ``weights_only``) or an exported ``.onnx`` file. int8 and ONNX models run on the CPU."""
        dev = resolve_device(device) if isinstance(device, str) else device
        if Path(path).suffix.lower() == ".onnx":
            if not Path(path).is_file():
                raise CheckpointError(f"ONNX model {path} not found; export one with deploy-bench")
            model: nn.Module = OnnxModel(path)
            meta = {**model.meta, "variant": "onnx"}
            dev = torch.device("cpu")
        else:
            blob = load_checkpoint(path)
            meta = {k: v for k, v in blob.items() if k not in ("state_dict", "fp32_shapes")}
            if blob.get("variant") == "int8":
                dev = torch.device("cpu")
            try:
                model = model_from_blob(blob).to(dev)
            except CheckpointError as exc:  # what is wrong inside a file, said with the file's name
                raise CheckpointError(f"{path}: {exc}") from None
        channels_last = resolve_channels_last(None, dev) and meta.get("variant", "fp32") in ("fp32", "pruned")
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        norm = Normalizer(meta["mean"], meta["std"], dev, meta["image_size"], channels_last)
        size = int(meta.get("data_image_size", 32))
        check_runs(model, norm, size, len(meta["classes"]), path)
        return cls(model, list(meta["classes"]), norm, size, dev, meta, Path(path))

    def check_dataset(self, dataset: Dataset) -> Dataset:
        """``dataset`` with its labels in this checkpoint's class order; one-line error when its classes differ.

        Class names are compared, not just counted: a checkpoint trained on airplane/cat/ship must not
        score a folder of dog/frog/horse. The same names in another order (other folder sorting) are mapped.
        """
        if sorted(dataset.classes) != sorted(self.classes):
            raise CheckpointError(
                f"{self.path} predicts {len(self.classes)} classes ({short_list(self.classes)}) but {dataset.name} "
                f"has {dataset.num_classes} ({short_list(dataset.classes)}); evaluate on a dataset with the classes "
                "it was trained on"
            )
        return dataset.with_class_order(self.classes)

    @property
    def amp(self) -> str:
        """The mixed precision the checkpoint was trained with; every evaluation of it uses the same (int8 and
        ONNX models run as they are)."""
        if self.meta.get("variant") in ("int8", "onnx"):
            return "off"
        return self.meta.get("config", {}).get("amp", "auto")

    def evaluate(
        self,
        split: Split,
        tta: str = "none",
        average: str = "logits",
        batch_size: int = EVAL_BATCH_SIZE,
        report: bool = True,
        per_image: bool = False,
    ) -> dict[str, Any]:
        """The one evaluation path for a checkpoint (``evaluate``, test.json, notebooks): top-1/top-5, loss,
        time and, with ``report``, the full classification report under this checkpoint's class names
        (``per_image``: each image's top-1 right or wrong, for paired comparisons).
        ``split`` must be labelled in this checkpoint's class order (see :meth:`check_dataset`)."""
        forward = tta_forward(self.model, tta, average)
        return evaluate(
            self.model,
            self.loader(split, batch_size),
            self.device,
            tuple(self.classes) if report else None,
            self.amp,
            forward,
            per_image,
        )

    def compare_tta(
        self, split: Split, average: str = "logits", batch_size: int = EVAL_BATCH_SIZE, per_image: bool = False
    ) -> list[dict]:
        """Every TTA mode on ``split`` (see :func:`cifarkit.evaluate.compare_tta`), under this checkpoint's precision."""
        loader = self.loader(split, batch_size)
        return compare_tta(self.model, loader, self.device, average=average, amp=self.amp, per_image=per_image)

    def logits(self, split: Split, batch_size: int = EVAL_BATCH_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and labels of ``split`` (float32, CPU)."""
        logits, labels, _ = predict_logits(self.model, self.loader(split, batch_size), self.device, self.amp)
        return logits, labels

    def loader(self, split: Split, batch_size: int = EVAL_BATCH_SIZE) -> DeviceLoader:
        """An evaluation loader over ``split`` with this checkpoint's preprocessing."""
        return DeviceLoader(split, batch_size, self.normalizer)

    def to_uint8(self, image: Any) -> np.ndarray:
        """An image file's path, a PIL image or a uint8 array (:func:`uint8_array`) -> (3, S, S) uint8 at the
        training data's size; anything else is a one-line :class:`DataError` saying what to give."""
        from PIL import Image

        if isinstance(image, (str, os.PathLike)):
            return decode_image(image_file(Path(image)), self.data_size)
        if isinstance(image, Image.Image):
            return pil_to_array(image, self.data_size)
        return pil_to_array(Image.fromarray(uint8_array(image)), self.data_size)

    @torch.no_grad()
    def probabilities(self, batch: np.ndarray, tta: str = "none", average: str = "logits") -> torch.Tensor:
        """Class probabilities (N, C) for uint8 images (N, 3, S, S)."""
        x = self.normalizer(torch.from_numpy(batch).to(self.device))
        logits = tta_forward(self.model, tta, average)(x)
        return torch.softmax(logits.float(), dim=1).cpu()


@torch.no_grad()
def check_runs(model: nn.Module, normalizer: Normalizer, size: int, num_classes: int, path: str | os.PathLike) -> None:
    """One image through the loaded network: layers whose shapes do not chain, or outputs that do not match
    the class names, are refused in one line before any real image is scored."""
    try:
        out = model.eval()(normalizer(torch.zeros(1, 3, size, size, dtype=torch.uint8, device=normalizer.mean.device)))
    except Exception as exc:
        reason = first_line(exc)
        raise CheckpointError(f"the network in {path} does not run ({reason}); is it the right file?") from None
    if tuple(out.shape) != (1, num_classes):
        raise CheckpointError(
            f"the network in {path} gives {tuple(out.shape)[1:]} outputs per image but names {num_classes} classes; "
            "is it the right file?"
        )


def image_file(path: Path) -> Path:
    """``path`` if it is a regular file; else a one-line :class:`DataError` saying what it is instead."""
    if path.is_file():
        return path
    if path.is_dir():
        raise DataError(f"{path} is a folder; pass its image files (expand_paths lists them)")
    raise DataError(f"{path} is not a regular file" if path.exists() else f"file not found: {path}")


def uint8_array(image: Any) -> np.ndarray:
    """An array-like image (numpy, torch, nested lists) as the HW or HWC uint8 array PIL reads: HW, HWC or CHW
    with 1, 3 or 4 channels, whole numbers 0-255. Anything else (floats, other shapes, ``None``) is refused in
    one line: a float image in 0-1 cast to uint8 would be black, and a silent wrong answer is worse than an error."""
    try:
        array = image.numpy(force=True) if isinstance(image, torch.Tensor) else np.asarray(image)
    except (ValueError, TypeError):  # ragged lists
        array = np.asarray(None)
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = array.transpose(1, 2, 0)  # CHW -> HWC
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.dtype.kind in "iu" and array.size and 0 <= array.min() and array.max() <= 255:
        array = array.astype(np.uint8)  # whole numbers 0-255 in a wider type, e.g. a list of Python ints
    shape_ok = array.ndim in (2, 3) and array.shape[2:] in ((), (3,), (4,)) and array.size
    if array.dtype != np.uint8 or not shape_ok:
        raise DataError(
            f"an array of dtype {array.dtype} and shape {array.shape} is not an image; give whole numbers 0-255 "
            "as HW, HWC or CHW with 1, 3 or 4 channels (a float image in 0-1: (x * 255).round().astype('uint8')), "
            "a PIL image or a file path"
        )
    return array


def expand_paths(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Files and folders (folders expanded to the image files inside them, recursively, sorted), each
    found relative to the working directory or else the repository root, so a notebook in ``notebooks/``
    and a shell at the root name the same files alike."""
    out: list[Path] = []
    for p in paths:
        path = resolve_user_path(p)
        if path.is_dir():
            out.extend(image_files(path))
        else:
            out.append(path)
    return out


def topk_entries(probs: torch.Tensor, classes: Sequence[str], k: int) -> list[dict]:
    """``[{"class": name, "prob": p}, ...]`` for the ``k`` most likely classes, ranked as every metric ranks them
    (:func:`cifarkit.evaluate.ranked_classes`: equal probabilities to the lower class index), so the first entry is
    the one prediction :func:`cifarkit.evaluate.predicted_labels` makes for the image."""
    index = ranked_classes(probs[None])[0, : min(k, probs.numel())]
    return [{"class": classes[i], "prob": round(float(probs[i]), 6)} for i in index.tolist()]


def predict_images(
    predictor: Predictor,
    images: Sequence[Any],
    tta: str = "none",
    topk: int = TOP_K,
    average: str = "logits",
    batch_size: int = 64,
) -> list[dict]:
    """One result per image, in order: ``{"path", "topk"}`` or ``{"path", "error"}``. An image is a file path, a
    PIL image or a uint8 array (HWC or CHW, named ``image_<i>``); a bad one never stops the rest, and the
    readable ones are scored ``batch_size`` at a time. One path or PIL image alone is read as a list of one."""
    if isinstance(images, (str, os.PathLike)) or hasattr(images, "getpixel"):
        images = [images]
    if getattr(images, "ndim", 4) != 4:
        raise ConfigError(f"images is one {images.ndim}-d array; pass a list of images, e.g. [image]")
    check_value("topk", topk, positive_int)
    check_value("batch_size", batch_size, positive_int)
    results: list[dict] = []
    good: list[tuple[int, np.ndarray]] = []
    for index, image in enumerate(images):
        is_path = isinstance(image, (str, os.PathLike))
        results.append({"path": str(image) if is_path else f"image_{index}"})
        try:
            good.append((index, predictor.to_uint8(image)))
        except CifarkitError as exc:
            results[-1]["error"] = str(exc)
    for start in range(0, len(good), batch_size):
        chunk = good[start : start + batch_size]
        probs = predictor.probabilities(np.stack([img for _, img in chunk]), tta, average)
        for (i, _), p in zip(chunk, probs, strict=True):
            results[i]["topk"] = topk_entries(p, predictor.classes, topk)
    return results


def predict(
    model_or_ckpt: Predictor | str | os.PathLike,
    images: Sequence[Any],
    tta: str = "none",
    topk: int = TOP_K,
    average: str = "logits",
    device: str = "auto",
):
    """Notebook API: :func:`predict_images` as a tidy ``pandas.DataFrame``, one row per (image, rank): ``image``,
    ``rank``, ``class``, ``prob``, ``error`` (an unreadable image has one row, with only its error).
    ``model_or_ckpt`` is a :class:`Predictor` or a checkpoint's path (loaded onto ``device``); ``tta`` a mode of
    :data:`cifarkit.evaluate.TTA_MODES`, whose views are averaged as ``average`` (``logits`` or ``probs``)."""
    import pandas as pd

    predictor = (
        model_or_ckpt if isinstance(model_or_ckpt, Predictor) else Predictor.from_checkpoint(model_or_ckpt, device)
    )
    rows: list[dict] = []
    for r in predict_images(predictor, images, tta, topk, average):
        if "error" in r:
            rows.append({"image": r["path"], "rank": None, "class": None, "prob": None, "error": r["error"]})
        else:
            ranked = enumerate(r["topk"], start=1)
            rows += [{"image": r["path"], "rank": rank, **entry, "error": None} for rank, entry in ranked]
    return pd.DataFrame(rows, columns=["image", "rank", "class", "prob", "error"])


def evaluate_run(run_dir: str | Path, dataset: Dataset, device: torch.device | str = "auto") -> dict[str, Any]:
    """Score a run's best.pt on ``dataset``'s test split; write and return its test.json."""
    run_dir = Path(run_dir)
    predictor = Predictor.from_checkpoint(run_dir / "best.pt", device)
    dataset = predictor.check_dataset(dataset)
    result = {"split": "test", "checkpoint": "best.pt", **test_json(predictor.evaluate(dataset.split("test")))}
    write_run_file(run_dir, "test", result)
    return result
