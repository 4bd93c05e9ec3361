"""The device loader and batched augmentation."""

from __future__ import annotations

import torch

from cifarkit.data import Split
from cifarkit.loader import (
    DeviceLoader,
    Normalizer,
    crop_at,
    cutout_at,
    draw_crop_offsets,
    draw_cutout_centres,
    flip_where,
    reflect_index,
)


def ramp_images(n: int = 64, size: int = 32) -> torch.Tensor:
    """Images whose pixel value encodes its column: shifts and flips become visible."""
    cols = torch.arange(size, dtype=torch.uint8) * 4
    return cols.expand(n, 3, size, size).clone()


def test_reflect_index_mirrors_like_reflect_padding():
    idx = torch.arange(-3, 8)
    assert reflect_index(idx, 5).tolist() == [3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1]
    x = torch.arange(5.0)[None, None]
    padded = torch.nn.functional.pad(x, (3, 3), mode="reflect")[0, 0]
    assert padded.tolist() == x[0, 0][reflect_index(torch.arange(-3, 8), 5)].tolist()


def test_crop_keeps_shape_dtype_and_differs_per_image():
    imgs = ramp_images()
    g = torch.Generator().manual_seed(0)
    out = crop_at(imgs, draw_crop_offsets(len(imgs), 4, g))
    assert out.shape == imgs.shape and out.dtype == torch.uint8
    first_cols = out[:, 0, 5, 5]
    assert len(set(first_cols.tolist())) > 3  # different offsets for different images


def test_crop_matches_reflect_pad_then_crop():
    imgs = torch.randint(0, 256, (8, 3, 10, 10), dtype=torch.uint8)
    g = torch.Generator().manual_seed(3)
    offsets = torch.randint(-2, 3, (2, 8), generator=torch.Generator().manual_seed(3))
    out = crop_at(imgs, draw_crop_offsets(8, 2, g))
    padded = torch.nn.functional.pad(imgs.float(), (2, 2, 2, 2), mode="reflect")
    for i in range(8):
        dy, dx = offsets[0, i] + 2, offsets[1, i] + 2
        assert torch.equal(out[i].float(), padded[i, :, dy : dy + 10, dx : dx + 10])


def test_flip_flips_about_half_each_image_whole():
    imgs = ramp_images(200)
    out = flip_where(imgs, torch.rand(len(imgs), generator=torch.Generator().manual_seed(0)) < 0.5)
    flipped = out[:, 0, 0, 0] == imgs[0, 0, 0, -1]
    assert 60 < flipped.sum() < 140
    assert torch.equal(out[flipped], imgs[flipped].flip(-1))
    assert torch.equal(out[~flipped], imgs[~flipped])


def test_cutout_zeroes_one_square_per_image_at_different_places():
    x = torch.ones(32, 3, 32, 32)
    out = cutout_at(x, draw_cutout_centres(32, 32, 32, torch.Generator().manual_seed(0)), 8)
    zeros = (out[:, 0] == 0).flatten(1).sum(1)
    assert (zeros > 0).all() and (zeros <= 64).all()
    assert (out == 0).all(dim=1).any(dim=(1, 2)).all()  # all channels cleared together
    assert len({tuple(torch.nonzero(out[i, 0] == 0)[0].tolist()) for i in range(32)}) > 5


def test_loader_train_epochs_reshuffle_and_normalise():
    images = torch.randint(0, 256, (100, 3, 32, 32), dtype=torch.uint8)
    split = Split(images, torch.arange(100) % 10)
    norm = Normalizer((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), torch.device("cpu"))
    loader = DeviceLoader(split, 32, norm, train=True, augment=("crop", "flip"), seed=0)
    assert len(loader) == 3  # drop_last when training
    epoch1 = torch.cat([y for _, y in loader])
    epoch2 = torch.cat([y for _, y in loader])
    assert not torch.equal(epoch1, epoch2)
    x, _ = next(iter(loader))
    assert x.shape == (32, 3, 32, 32) and x.dtype == torch.float32
    # normalised: (pixel / 255 - 0.5) / 0.25, so uint8 0..255 lands in [-2, 2]; an unaugmented batch shows it exactly
    plain = DeviceLoader(split, 32, norm)
    x, _ = next(iter(plain))
    assert torch.allclose(x, (images[:32].float() / 255 - 0.5) / 0.25, atol=1e-6)
    assert -2.0 <= float(x.min()) and float(x.max()) <= 2.0


def test_eval_loader_is_ordered_unaugmented_and_resizes():
    images = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8)
    norm = Normalizer((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), torch.device("cpu"), image_size=64, channels_last=True)
    loader = DeviceLoader(Split(images, torch.arange(10)), 4, norm, augment=("crop", "flip", "cutout"))
    batches = list(loader)
    assert [len(y) for _, y in batches] == [4, 4, 2]
    assert torch.cat([y for _, y in batches]).tolist() == list(range(10))
    x = batches[0][0]
    assert x.shape == (4, 3, 64, 64) and x.is_contiguous(memory_format=torch.channels_last)
    expected = torch.nn.functional.interpolate((images[:4].float() / 255 - 0.5) / 0.25, size=(64, 64), mode="bilinear")
    assert torch.allclose(x, expected, atol=1e-5)  # no crop, flip or cutout outside training


def test_loader_state_resumes_the_random_stream():
    split = Split(torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8), torch.arange(64) % 4)
    norm = Normalizer((0.5,) * 3, (0.25,) * 3, torch.device("cpu"))
    a = DeviceLoader(split, 16, norm, train=True, augment=("crop", "flip"), seed=5)
    list(a)
    state = a.state_dict()
    nxt = [x for x, _ in a]
    b = DeviceLoader(split, 16, norm, train=True, augment=("crop", "flip"), seed=99)
    b.load_state_dict(state)
    assert all(torch.equal(p, q) for p, q in zip(nxt, [x for x, _ in b], strict=True))


def test_alternating_flip_shows_each_image_both_ways_in_two_epochs_and_resumes():
    images = torch.arange(64 * 3 * 4 * 4, dtype=torch.float32).reshape(64, 3, 4, 4).remainder(251).to(torch.uint8)
    split = Split(images, torch.arange(64))  # the label names the image
    norm = Normalizer((0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255), torch.device("cpu"))

    def flipped(loader) -> dict[int, bool]:
        seen = {}
        for x, y in loader:
            for img, label in zip(x, y.tolist(), strict=True):
                seen[label] = not torch.equal(img, images[label].float())
        return seen

    loader = DeviceLoader(split, 16, norm, train=True, augment=("flip",), seed=3, alternating_flip=True)
    first, second = flipped(loader), flipped(loader)
    assert len(first) == len(second) == 64 and 16 < sum(first.values()) < 48
    assert all(first[i] != second[i] for i in range(64))  # inverted every other epoch
    state = loader.state_dict()
    again = DeviceLoader(split, 16, norm, train=True, augment=("flip",), seed=3, alternating_flip=True)
    again.load_state_dict(state)
    assert flipped(again) == flipped(loader) == first  # a resumed loader continues the same alternation
