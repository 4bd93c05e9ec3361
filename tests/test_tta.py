"""Test-time augmentation: view counts and shapes, identity for none, averaging over the view axis."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cifarkit.errors import ConfigError
from cifarkit.evaluate import TTA_MODES, compare_tta, tta_forward, tta_views, view_count

EXPECTED_VIEWS = {"none": 1, "flip": 2, "5crop": 5, "flip5crop": 10, "scale3": 3, "translate": 6}


@pytest.mark.parametrize("size", [32, 128])
@pytest.mark.parametrize("mode", TTA_MODES)
def test_view_count_and_shapes(mode, size):
    x = torch.randn(4, 3, size, size)
    views = tta_views(x, mode)
    assert len(views) == EXPECTED_VIEWS[mode] == view_count(mode)
    assert all(v.shape == x.shape for v in views)


def test_views_are_what_they_claim():
    x = torch.arange(32.0).expand(1, 3, 32, 32).clone()  # value = column index
    flip = tta_views(x, "flip")
    assert torch.equal(flip[1], x.flip(-1))
    crops = tta_views(x, "5crop")
    assert crops[1][0, 0, 0, 0] < crops[0][0, 0, 0, 0] < crops[2][0, 0, 0, 0]  # left corner, centre, right corner
    t = tta_views(x, "translate")
    assert torch.equal(t[1][..., :, :-1], x[..., :, 1:])  # content moved one pixel left (and up)
    assert torch.equal(t[2][..., :, 1:], x[..., :, :-1])  # content moved one pixel right (and down)
    assert torch.equal(t[3], x.flip(-1))
    scale = tta_views(x, "scale3")
    assert (scale[0][..., 0, 0] == 0).all()  # 28 px view padded with the mean (zero after normalising)


def test_none_is_plain_inference():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    x = torch.randn(5, 3, 8, 8)
    assert torch.equal(tta_forward(model, "none")(x), model(x))


class FlipDetector(nn.Module):
    """Outputs class 1 for flipped input (left column dark), class 0 otherwise, as one-hot logits."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flipped = (x[:, 0, :, 0].mean(1) < x[:, 0, :, -1].mean(1)).float()
        return torch.stack([(1 - flipped) * 10, flipped * 10], dim=1)


def test_average_is_over_views_not_batch():
    x = torch.linspace(1, 0, 16).expand(3, 3, 16, 16).clone()  # bright left column: "not flipped"
    model = FlipDetector()
    assert model(x).argmax(1).tolist() == [0, 0, 0]
    assert model(x.flip(-1)).argmax(1).tolist() == [1, 1, 1]
    logits = tta_forward(model, "flip")(x)
    assert logits.shape == (3, 2)
    assert torch.allclose(logits, torch.tensor([[5.0, 5.0]] * 3))  # each image: mean of its view and its mirror
    probs = tta_forward(model, "flip", average="probs")(x).softmax(1)
    assert torch.allclose(probs, torch.full((3, 2), 0.5), atol=1e-4)


def test_unknown_mode_and_average():
    with pytest.raises(ConfigError, match="unknown TTA mode 'rotate'.*flip5crop"):
        tta_forward(nn.Identity(), "rotate")
    with pytest.raises(ConfigError, match="average"):
        tta_forward(nn.Identity(), "flip", average="median")


class LeftMinusRight(nn.Module):
    """Class 1 when the left half of the image is brighter than the right: exact on images made that way,
    and blind under a horizontal flip averaged with the original (the two views cancel to a tie)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        score = x[..., :half].mean(dim=(1, 2, 3)) - x[..., half:].mean(dim=(1, 2, 3))
        return torch.stack([torch.zeros_like(score), score], dim=1)


def test_compare_tta_measures_what_each_mode_does_to_a_known_model():
    from cifarkit.data import Split
    from cifarkit.loader import DeviceLoader, Normalizer

    labels = torch.arange(16) % 2
    images = torch.zeros(16, 3, 32, 32, dtype=torch.uint8)
    images[labels == 1, :, :, :16] = 200  # class 1: bright left half
    images[labels == 0, :, :, 16:] = 200  # class 0: bright right half
    loader = DeviceLoader(Split(images, labels), 8, Normalizer((0.5,) * 3, (0.25,) * 3, torch.device("cpu")))
    rows = {r["mode"]: r for r in compare_tta(LeftMinusRight(), loader, torch.device("cpu"))}
    assert list(rows) == list(TTA_MODES) and all(r["n"] == 16 and r["ms_per_image"] > 0 for r in rows.values())
    assert {"accuracy", "top5_accuracy", "losses"} <= set(rows["none"])  # test.json's names, no top1/top5/loss
    assert not {"top1", "top5", "loss"} & set(rows["none"])
    assert rows["none"]["accuracy"] == 1.0 and rows["none"]["gain_vs_none"] == 0 and rows["none"]["views"] == 1
    # the flipped view cancels the original to a tie, which argmax gives to class 0: only class 0 is right
    assert rows["flip"]["accuracy"] == 0.5 and rows["flip"]["gain_vs_none"] == -0.5 and rows["flip"]["views"] == 2
    assert rows["5crop"]["accuracy"] == 1.0 and rows["5crop"]["views"] == 5  # crops keep left and right apart
    # paired counts against plain inference on the same images: flip breaks the 8 class-1 images, fixes none
    assert (rows["none"]["fixed"], rows["none"]["broken"]) == (0, 0)
    assert (rows["flip"]["fixed"], rows["flip"]["broken"]) == (0, 8)
    no_base = compare_tta(LeftMinusRight(), loader, torch.device("cpu"), modes=("flip",))
    assert no_base[0]["gain_vs_none"] is None  # no "none" row to compare with
