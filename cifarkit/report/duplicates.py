"""Duplicate images: exact copies by content hash, near-duplicates by average hash plus thumbnail RMS."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from cifarkit.config import check_value, count, non_negative, number


def image_hashes(images: torch.Tensor) -> list[str]:
    """Content hash of each image (exact duplicates share a hash)."""
    flat = images.reshape(images.shape[0], -1).numpy()
    return [hashlib.blake2b(row.tobytes(), digest_size=16).hexdigest() for row in flat]


def duplicate_report(splits: dict[str, torch.Tensor], max_examples: int = 20) -> dict:
    """Exact-duplicate images across splits, by content hash.

    Returns ``{"pairs": {"train/test": count, ...}, "examples": [{"a": [split, index],
    "b": [split, index]}, ...]}``; duplicates inside one split are counted under "train/train".
    """
    check_value("max_examples", max_examples, count)
    seen: dict[str, tuple[str, int]] = {}
    counts: dict[str, int] = {}
    examples: list[dict] = []
    for name, images in splits.items():
        for i, h in enumerate(image_hashes(images)):
            if h in seen:
                first = seen[h]
                key = f"{first[0]}/{name}"
                counts[key] = counts.get(key, 0) + 1
                if len(examples) < max_examples:
                    examples.append({"a": [first[0], first[1]], "b": [name, i]})
            else:
                seen[h] = (name, i)
    return {"pairs": counts, "total": sum(counts.values()), "examples": examples}


def average_hash(images: torch.Tensor, side: int = 8) -> np.ndarray:
    """64-bit perceptual hash per image: grayscale, shrink to ``side`` x ``side``, bit = above the image mean."""
    gray = images.float().mean(dim=1, keepdim=True)
    small = torch.nn.functional.adaptive_avg_pool2d(gray, side).flatten(1)
    bits = (small > small.mean(dim=1, keepdim=True)).numpy()
    return np.packbits(bits, axis=1).view(">u8").ravel().astype(np.uint64)


def thumbnails(images: torch.Tensor, side: int = 16) -> torch.Tensor:
    """Colour thumbnails (N, 3*side*side), float in 0-255: small enough to compare, robust to re-encoding."""
    return torch.nn.functional.adaptive_avg_pool2d(images.float(), side).flatten(1)


def near_duplicates(
    a: torch.Tensor, b: torch.Tensor, max_bits: int = 8, max_rms: float = 15.0, chunk: int = 512
) -> list[tuple[int, int, float]]:
    """Pairs (index in a, index in b, thumbnail RMS difference) of near-identical images, closest first.

    Two stages: 64-bit average hashes within ``max_bits`` propose candidates cheaply; a 16x16
    colour thumbnail RMS difference <= ``max_rms`` (of 255) confirms them. The hash alone
    matches unrelated images with the same coarse layout (sky over ground), the thumbnail check
    removes those while keeping re-encoded, slightly brightened or shifted copies.
    """
    check_value("max_bits", max_bits, number(int, 0, 64))  # of a 64-bit hash
    check_value("max_rms", max_rms, non_negative)
    ha, hb = average_hash(a), average_hash(b)
    ta, tb = thumbnails(a).numpy(), thumbnails(b).numpy()
    pairs: list[tuple[int, int, float]] = []
    for start in range(0, len(hb), chunk):
        dist = np.bitwise_count(ha[:, None] ^ hb[None, start : start + chunk])  # (len(a), chunk)
        ia, ib = np.nonzero(dist <= max_bits)
        ib = ib + start
        for s in range(0, len(ia), 65536):  # bounded memory however many candidates there are
            i, j = ia[s : s + 65536], ib[s : s + 65536]
            rms = np.sqrt(((ta[i] - tb[j]) ** 2).mean(axis=1))
            keep = rms <= max_rms
            pairs += [(int(x), int(y), round(float(r), 2)) for x, y, r in zip(i[keep], j[keep], rms[keep], strict=True)]
    return sorted(pairs, key=lambda p: (p[2], p[1]))


def pair_images(
    a: Any, b: Any, classes: Sequence[str], pairs: Sequence[tuple[int, int, float]], names=("train", "test")
):
    """Interleaved images and titles of (index in split ``a``, index in split ``b``, distance) pairs, for a
    grid of pairs; each title names the image's class, so a pair whose classes differ (a near-copy with
    another label) shows it."""
    images, titles = [], []
    for i, j, d in pairs:
        images += [a.images[i].numpy(), b.images[j].numpy()]
        titles += [
            f"{names[0]} #{i}\n{classes[int(a.labels[i])]}",
            f"{names[1]} #{j}\n{classes[int(b.labels[j])]}, RMS {d:g}",
        ]
    return (np.stack(images) if images else np.zeros((0, 3, 32, 32), np.uint8)), titles
