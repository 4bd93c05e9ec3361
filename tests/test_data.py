"""Dataset readers, specs, statistics, splits and duplicate checks."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile

import numpy as np
import pytest
import torch

from cifarkit import data
from cifarkit.data import (
    CIFAR10_MEAN,
    channel_stats,
    load_dataset,
    make_synthetic,
    stratified_split,
)
from cifarkit.errors import ConfigError, DataError
from cifarkit.report.duplicates import duplicate_report

from .conftest import write_cifar10_batches, write_cifar100, write_image_folder


def test_cifar10_reader_reads_python_batches(data_dir):
    write_cifar10_batches(data_dir, per_batch=20)
    ds = load_dataset("cifar10", data_dir, download=False)
    assert ds.train.images.shape == (100, 3, 32, 32) and ds.train.images.dtype == torch.uint8
    assert ds.test.images.shape == (20, 3, 32, 32)
    assert ds.classes[0] == "airplane" and ds.num_classes == 10
    assert ds.mean == CIFAR10_MEAN
    # the row-major 3072 vector is R plane, G plane, B plane
    import pickle

    raw = pickle.load(open(data_dir / "cifar-10-batches-py" / "data_batch_1", "rb"), encoding="bytes")
    assert torch.equal(ds.train.images[0, 1].flatten(), torch.from_numpy(raw[b"data"][0, 1024:2048]))
    assert ds.train.labels[:10].tolist() == list(range(10))


def test_cifar100_fine_and_coarse(data_dir):
    write_cifar100(data_dir)
    fine = load_dataset("cifar100", data_dir, download=False)
    coarse = load_dataset("cifar100:coarse", data_dir, download=False)
    assert fine.num_classes == 100 and coarse.num_classes == 20
    assert coarse.train.labels.max() < 20
    assert torch.equal(coarse.train.labels, fine.train.labels // 5)


class RunsACommand:
    """What an attacker would put in a pickle: unpickling it calls os.system."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        import os

        return (os.system, (self.command,))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_batches_load_as_data_only(data_dir, tmp_path, protocol):
    """A crafted batches.meta is refused in one line before anything in it runs; real batches of any
    pickle protocol still load."""
    import pickle

    folder = write_cifar10_batches(data_dir, per_batch=10)
    batch = pickle.load(open(folder / "data_batch_1", "rb"), encoding="bytes")
    (folder / "data_batch_1").write_bytes(pickle.dumps(batch, protocol=protocol))
    assert len(load_dataset("cifar10", data_dir, download=False).train) == 50
    marker = tmp_path / "ran"
    meta = {b"label_names": [b"a"] * 10, b"num_vis": RunsACommand(f"touch {marker}")}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    with pytest.raises(DataError, match=r"batches.meta is not a CIFAR batch: it holds (posix|os)\.system") as err:
        load_dataset("cifar10", data_dir, download=False)
    assert not marker.exists() and "\n" not in str(err.value)


def test_cifar_archive_extracted_and_checksum_verified(data_dir, tmp_path, monkeypatch):
    src = write_cifar10_batches(tmp_path / "src")
    tar_path = data_dir / "cifar-10-python.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tar:
        tar.add(src, arcname="cifar-10-batches-py")
    md5 = hashlib.md5(tar_path.read_bytes()).hexdigest()
    good = data.CifarArchive(**{**data.CIFAR_ARCHIVES["cifar10"].__dict__, "md5": md5})
    monkeypatch.setitem(data.CIFAR_ARCHIVES, "cifar10", good)
    assert len(load_dataset("cifar10", data_dir, download=False).train) == 100

    bad = data.CifarArchive(**{**good.__dict__, "md5": "0" * 32})
    monkeypatch.setitem(data.CIFAR_ARCHIVES, "cifar10", bad)
    import shutil

    shutil.rmtree(data_dir / "cifar-10-batches-py")
    with pytest.raises(DataError, match="checksum"):
        load_dataset("cifar10", data_dir, download=False)


def test_offline_download_names_the_file_to_place(data_dir, monkeypatch):
    unreachable = data.CifarArchive(
        **{**data.CIFAR_ARCHIVES["cifar10"].__dict__, "url": "http://127.0.0.1:9/cifar.tgz"}
    )
    monkeypatch.setitem(data.CIFAR_ARCHIVES, "cifar10", unreachable)
    with pytest.raises(DataError, match="cifar-10-python.tar.gz") as exc:
        load_dataset("cifar10", data_dir)
    assert "\n" not in str(exc.value)
    assert not list(data_dir.glob("*.part"))  # nothing half-written is left behind


@pytest.fixture
def served(tmp_path):
    """A local HTTP server over tmp_path/www (the download path without the internet)."""
    import functools
    import http.server
    import threading

    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_verifies_the_checksum_then_extracts(data_dir, tmp_path, served, monkeypatch):
    www, url = served
    src = write_cifar10_batches(tmp_path / "src", per_batch=4)
    with tarfile.open(www / "c10.tar.gz", "w:gz") as tar:
        tar.add(src, arcname="cifar-10-batches-py")
    md5 = hashlib.md5((www / "c10.tar.gz").read_bytes()).hexdigest()
    served_archive = data.CifarArchive(**{**data.CIFAR_ARCHIVES["cifar10"].__dict__, "url": f"{url}/c10.tar.gz"})
    monkeypatch.setitem(
        data.CIFAR_ARCHIVES, "cifar10", data.CifarArchive(**{**served_archive.__dict__, "md5": "0" * 32})
    )
    with pytest.raises(DataError, match="wrong checksum"):
        load_dataset("cifar10", data_dir)
    assert sorted(p.name for p in data_dir.iterdir()) == []  # the bad download is not kept
    monkeypatch.setitem(data.CIFAR_ARCHIVES, "cifar10", data.CifarArchive(**{**served_archive.__dict__, "md5": md5}))
    ds = load_dataset("cifar10", data_dir)
    assert len(ds.train) == 20 and len(ds.test) == 4
    assert sorted(p.name for p in data_dir.iterdir()) == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]


def test_missing_archive_without_download(data_dir):
    with pytest.raises(DataError, match="cifar-100-python.tar.gz"):
        load_dataset("cifar100", data_dir, download=False)


def test_folder_reader_any_size_and_cache(data_dir, tmp_path):
    root = write_image_folder(tmp_path / "f", num_classes=3, train=5, test=2, size=40, fmt="jpg")
    ds = load_dataset(f"folder:{root}", data_dir, image_size=32)
    assert ds.classes == ("class_0", "class_1", "class_2")
    assert ds.train.images.shape == (15, 3, 32, 32) and ds.test.images.shape == (6, 3, 32, 32)
    caches = sorted((data_dir / "cache").glob("*.pt"))
    assert len(caches) == 2
    again = load_dataset(f"folder:{root}", data_dir, image_size=32)
    assert torch.equal(again.train.images, ds.train.images)
    # a new file changes the key: the cache is rebuilt, not reused
    write_image_folder(tmp_path / "extra", num_classes=3, train=1, test=1, size=40)
    (tmp_path / "extra" / "train" / "class_0" / "0000.png").rename(root / "train" / "class_0" / "new.png")
    assert len(load_dataset(f"folder:{root}", data_dir).train) == 16


def test_folder_with_only_test_split(data_dir, tmp_path):
    root = write_image_folder(tmp_path / "f", num_classes=2, train=2, test=3)
    import shutil

    shutil.rmtree(root / "train")
    ds = load_dataset(f"folder:{root}", data_dir)
    assert ds.train is None and len(ds.test) == 6
    with pytest.raises(DataError, match="no train split"):
        ds.split("train")


def test_folder_corrupt_image_is_named(data_dir, image_folder):
    bad = image_folder / "train" / "class_1" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    with pytest.raises(DataError, match="broken.png"):
        load_dataset(f"folder:{image_folder}", data_dir)


def test_folder_empty_class_is_named(data_dir, image_folder):
    (image_folder / "train" / "class_9").mkdir()
    with pytest.raises(DataError, match="class_9"):
        load_dataset(f"folder:{image_folder}", data_dir)


def test_folder_skips_hidden_folders_and_reads_nested_ones(data_dir, image_folder):
    """Jupyter leaves .ipynb_checkpoints beside class folders; ImageFolder-style listing reads sub-folders."""
    (image_folder / "train" / ".ipynb_checkpoints").mkdir()
    nested = image_folder / "train" / "class_0" / "more"
    nested.mkdir()
    first_of_class_1 = sorted((image_folder / "train" / "class_1").glob("*.png"))[0]
    first_of_class_1.rename(nested / "moved.png")
    ds = load_dataset(f"folder:{image_folder}", data_dir)
    assert ds.classes == ("class_0", "class_1", "class_2") and len(ds.train) == 36
    assert ds.train.labels.bincount().tolist() == [13, 11, 12]


def test_unknown_and_missing_specs(data_dir, tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'mnist'.*cifar10"):
        load_dataset("mnist", data_dir)
    with pytest.raises(DataError, match="not found"):
        load_dataset(f"folder:{tmp_path / 'nope'}", data_dir)
    with pytest.raises(DataError, match="synthetic option"):
        load_dataset("synthetic:colours=3", data_dir)


def test_synthetic_is_deterministic_and_configurable():
    a = load_dataset("synthetic:classes=4,size=16,train=5,test=2,seed=3")
    b = make_synthetic(num_classes=4, size=16, train_per_class=5, test_per_class=2, seed=3)
    assert a.train.images.shape == (20, 3, 16, 16) and a.num_classes == 4
    assert torch.equal(a.train.images, b.train.images)
    # classes differ on average: the data is learnable
    means = torch.stack([a.train.images[a.train.labels == c].float().mean(0) for c in range(4)])
    assert (means[0] - means[1]).abs().mean() > 5


def test_channel_stats_match_numpy():
    imgs = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8)
    mean, std = channel_stats(imgs, chunk=7)
    x = imgs.double() / 255
    assert mean == pytest.approx(x.mean(dim=(0, 2, 3)).tolist(), abs=1e-4)
    assert std == pytest.approx(x.std(dim=(0, 2, 3), unbiased=False).tolist(), abs=1e-4)
    one_colour = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    one_colour[:, 1] = 200
    assert channel_stats(one_colour) == ((0.0, round(200 / 255, 4), 0.0), (round(1 / 255, 4),) * 3)


def test_stratified_split_is_disjoint_seeded_and_stratified():
    labels = torch.arange(10).repeat_interleave(50)
    tr, va = stratified_split(labels, 0.2, seed=1)
    assert len(set(tr.tolist()) & set(va.tolist())) == 0
    assert len(tr) + len(va) == 500
    assert torch.bincount(labels[va]).tolist() == [10] * 10
    tr2, va2 = stratified_split(labels, 0.2, seed=1)
    assert torch.equal(va, va2)
    assert not torch.equal(va, stratified_split(labels, 0.2, seed=2)[1])
    with pytest.raises(ConfigError, match=re.escape("val_fraction: 1.5 must be a fraction between 0 and 1")):
        stratified_split(labels, 1.5, seed=0)  # a setting out of range, as --val-fraction 1.5 says it


def test_duplicate_report_finds_cross_split_copies():
    train = torch.randint(0, 256, (20, 3, 8, 8), dtype=torch.uint8)
    test = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    test[2] = train[7]
    test[4] = train[3]
    report = duplicate_report({"train": train, "test": test})
    assert report["pairs"] == {"train/test": 2}
    assert {"a": ["train", 7], "b": ["test", 2]} in report["examples"]


def test_near_duplicates_find_altered_copies_not_lookalikes():
    from cifarkit.report.duplicates import near_duplicates

    g = torch.Generator().manual_seed(0)
    train = torch.randint(0, 256, (50, 3, 32, 32), generator=g, dtype=torch.uint8)
    test = torch.randint(0, 256, (6, 3, 32, 32), generator=g, dtype=torch.uint8)
    test[1] = (train[10].int() + 6).clamp(0, 255).to(torch.uint8)  # brightened copy
    noisy = train[20].int() + torch.randint(-8, 9, (3, 32, 32), generator=g)
    test[4] = noisy.clamp(0, 255).to(torch.uint8)  # re-encoding-like noise
    # same coarse layout (bright top, dark bottom) but different content: the hash alone would match
    sky = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    sky[:, :, :16] = 200
    sky[1, 0] += 50
    pairs = near_duplicates(torch.cat([train, sky[:1]]), torch.cat([test, sky[1:]]))
    assert sorted((i, j) for i, j, _ in pairs) == [(10, 1), (20, 4)]
    assert all(d <= 15 for _, _, d in pairs)


def test_demo_and_statistic_samples_cover_every_class_of_a_class_sorted_folder(tmp_path):
    """Folder datasets are sorted by class: a demo of 4 or a statistic over 5,000 must not be one class."""
    from cifarkit.data import load_dataset

    folder = write_image_folder(tmp_path / "sorted", num_classes=3, train=12, test=4)
    ds = load_dataset(f"folder:{folder}", tmp_path / "data")
    assert ds.train.labels[:12].unique().tolist() == [0]  # the folder really is class-sorted
    for split, n in ((ds.train, 3), (ds.train, 7), (ds.test, 3), (ds.test, 12)):
        picked = split.pick(n, seed=1)
        assert len(picked) == n and set(picked.labels[:3].tolist()) == {0, 1, 2}
        counts = torch.bincount(picked.labels, minlength=3)
        assert counts.max() - counts.min() <= 1  # spread evenly, not proportional to file order
    assert torch.equal(ds.train.pick(5, seed=1).images, ds.train.pick(5, seed=1).images)
    assert not torch.equal(ds.train.pick(5, seed=1).images, ds.train.pick(5, seed=2).images)
    assert len(ds.train.pick(5000, seed=0)) == len(ds.train)  # more than there are: all of them


def test_confused_examples_are_a_seeded_random_choice():
    from cifarkit.report.analysis import confused_examples

    labels = np.array([1] * 50 + [0] * 50)
    preds = np.array([2] * 50 + [0] * 50)
    first = confused_examples(labels, preds, 1, 2, n=5, seed=0)
    assert len(first) == 5 and set(first) <= set(range(50)) and list(first) != list(range(5))
    assert list(first) == list(confused_examples(labels, preds, 1, 2, n=5, seed=0))


def test_confused_grid_rows_are_pairs_with_the_wrong_class_probability():
    from cifarkit.report.analysis import confused_grid

    ds = make_synthetic(num_classes=3, train_per_class=1, test_per_class=4)
    labels = ds.test.labels.numpy()
    probs = np.zeros((len(labels), 3), np.float32)
    probs[np.arange(len(labels)), labels] = 1.0  # right everywhere ...
    cats = np.flatnonzero(labels == 1)[:2]
    probs[cats] = [0.1, 0.2, 0.7]  # ... except two images of class 1 taken for class 2
    pairs = [{"true": ds.classes[1], "predicted": ds.classes[2]}, {"true": ds.classes[0], "predicted": ds.classes[1]}]
    images, titles = confused_grid(ds, labels, probs, pairs, n=3)
    assert images.shape == (6, 3, 32, 32)  # two rows of three: the rows stay aligned with their pair
    assert titles[0] == f"{ds.classes[1]} → {ds.classes[2]}\np({ds.classes[2]}) 0.70"
    assert titles[1] == f"p({ds.classes[2]}) 0.70" and titles[2] == ""
    assert titles[3:] == ["", "", ""] and (images[2] == 255).all() and (images[3:] == 255).all()


def test_near_duplicate_pairs_are_titled_with_their_classes():
    from cifarkit.data import make_synthetic
    from cifarkit.report.duplicates import pair_images

    ds = make_synthetic(num_classes=3, train_per_class=4, test_per_class=2)
    images, titles = pair_images(ds.train, ds.test, ds.classes, [(0, 5, 3.5)])
    assert images.shape == (2, 3, 32, 32)
    train_class, test_class = ds.classes[int(ds.train.labels[0])], ds.classes[int(ds.test.labels[5])]
    assert titles == [f"train #0\n{train_class}", f"test #5\n{test_class}, RMS 3.5"]


EXTRACT_ON_A_SMALL_DISK = """
import hashlib, json, pickle, sys, tarfile
from pathlib import Path
import numpy as np
from cifarkit import data
from cifarkit.errors import DataError
disk = Path(sys.argv[1])
src = Path(sys.argv[2]) / "cifar-10-batches-py"
src.mkdir(parents=True)
for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:  # zeros: a tiny archive, large batches
    batch = {b"data": np.zeros((1000, 3072), dtype=np.uint8), b"labels": [i % 10 for i in range(1000)]}
    (src / name).write_bytes(pickle.dumps(batch))
(src / "batches.meta").write_bytes(pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}))
tar_path = disk / "cifar-10-python.tar.gz"
with tarfile.open(tar_path, "w:gz") as tar:
    tar.add(src / "batches.meta", arcname="cifar-10-batches-py/batches.meta")  # first, as in the real archive
    tar.add(src, arcname="cifar-10-batches-py")
md5 = hashlib.md5(tar_path.read_bytes()).hexdigest()
data.CIFAR_ARCHIVES["cifar10"] = data.CifarArchive(**{**data.CIFAR_ARCHIVES["cifar10"].__dict__, "md5": md5})
tries = []
for _ in range(2):  # the second run must not trust what the first one left
    try:
        data.load_dataset("cifar10", disk, download=False)
        tries.append({"error": None})
    except DataError as exc:
        tries.append({"error": str(exc), "left": sorted(p.name for p in disk.iterdir())})
print(json.dumps(tries))
"""


def test_a_disk_that_fills_while_extracting_leaves_no_partial_folder(on_small_disk, tmp_path):
    """The archive is one line when the disk fills, but the partial cifar-10-batches-py/ stayed, and the next
    run trusted it (its meta file is extracted first). A real 4 MiB disk (a tmpfs in a private mount namespace)
    fills while 18 MB are extracted."""
    import json

    done = on_small_disk(EXTRACT_ON_A_SMALL_DISK, kib=4096, args=(str(tmp_path / "src"),))
    assert done.returncode == 0, done.stderr
    for attempt in json.loads(done.stdout.strip().splitlines()[-1]):
        error = attempt["error"]
        assert error and "cannot extract" in error and "No space left on device" in error and "free space" in error
        assert "\n" not in error
        assert attempt["left"] == ["cifar-10-python.tar.gz"]  # nothing partial left


def test_a_corrupt_truncated_or_foreign_folder_cache_is_rebuilt(data_dir, tmp_path):
    """A cache a kill cut short, a damaged one, or one holding another folder's images is never half-used:
    the folder is decoded again and the cache rewritten; a write's leftover temporary file goes too."""
    root = write_image_folder(tmp_path / "f", num_classes=3, train=5, test=2)
    first = load_dataset(f"folder:{root}", data_dir)
    (cache,) = sorted((data_dir / "cache").glob("folder-train-*.pt"))
    whole = cache.read_bytes()
    stale = cache.parent / f".{cache.name}.deadbeef.tmp"  # what a kill -9 in the middle of a cache write leaves
    stale.write_bytes(whole[:100])
    os.utime(stale, (0, 0))  # from long ago
    damaged = {
        "truncated": whole[: len(whole) // 2],
        "garbage": b"\x00" * 64,
        "foreign": None,  # a valid cache file with other images under this folder's name
    }
    for how, content in damaged.items():
        if content is None:
            torch.save({"classes": ["a", "b"], "images": torch.zeros(2, 3, 32, 32, dtype=torch.uint8),
                        "labels": torch.tensor([0, 1])}, cache)  # fmt: skip
        else:
            cache.write_bytes(content)
        again = load_dataset(f"folder:{root}", data_dir)
        assert torch.equal(again.train.images, first.train.images) and again.classes == first.classes, how
        assert torch.load(cache, weights_only=True)["images"].shape == first.train.images.shape, how  # rewritten
    assert not stale.exists()


def test_official_batches_pickled_by_numpy_1_load(data_dir):
    """The official CIFAR files were pickled by Python 2 and NumPy 1, whose arrays name
    numpy.core.multiarray._reconstruct; NumPy 2 writes numpy._core. The restricted unpickler allows both."""
    import pickle

    folder = data_dir / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (10, 3072), dtype=np.uint8), b"labels": list(range(10))}
        raw = pickle.dumps(batch, protocol=2)
        assert b"numpy._core.multiarray" in raw or b"numpy.core.multiarray" in raw
        (folder / name).write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    meta = pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}, protocol=2)
    (folder / "batches.meta").write_bytes(meta)
    assert b"numpy._core" not in (folder / "data_batch_1").read_bytes()  # NumPy 1's path only
    ds = load_dataset("cifar10", data_dir, download=False)
    assert len(ds.train) == 50 and ds.train.images.dtype == torch.uint8 and len(ds.test) == 10


def hostile_archive(data_dir, monkeypatch, add) -> None:
    """cifar-10-python.tar.gz with the batches and whatever ``add(tar)`` puts in, its checksum made to match
    (only a crafted archive that passed the checksum could reach extraction)."""
    import io

    src = write_cifar10_batches(data_dir.parent / "hostile-src")
    tar_path = data_dir / "cifar-10-python.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tar:
        tar.add(src, arcname="cifar-10-batches-py")
        add(tar, io)
    md5 = hashlib.md5(tar_path.read_bytes()).hexdigest()
    monkeypatch.setitem(
        data.CIFAR_ARCHIVES, "cifar10", data.CifarArchive(**{**data.CIFAR_ARCHIVES["cifar10"].__dict__, "md5": md5})
    )


def traversal(tar, io):
    info = tarfile.TarInfo("cifar-10-batches-py/../../escaped.txt")
    info.size = 5
    tar.addfile(info, io.BytesIO(b"owned"))


def link_out(tar, io):
    info = tarfile.TarInfo("cifar-10-batches-py/passwd")
    info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    tar.addfile(info)


def oversized(tar, io):
    class Zeros(io.RawIOBase):  # 300 MB of zeros, streamed: the archive stays a few hundred kB
        left = 300 * 2**20

        def readable(self):
            return True

        def readinto(self, buffer):
            n = min(len(buffer), self.left)
            buffer[:n] = bytes(n)
            self.left -= n
            return n

    info = tarfile.TarInfo("cifar-10-batches-py/huge")
    info.size = Zeros.left
    tar.addfile(info, io.BufferedReader(Zeros()))


@pytest.mark.parametrize("add", [traversal, link_out, oversized], ids=["traversal", "symlink", "oversized"])
def test_a_hostile_cifar_archive_is_one_line_and_writes_nothing(data_dir, monkeypatch, add):
    hostile_archive(data_dir, monkeypatch, add)
    with pytest.raises(DataError, match="cifar-10-python.tar.gz") as err:
        load_dataset("cifar10", data_dir, download=False)
    assert "\n" not in str(err.value)
    assert sorted(p.name for p in data_dir.iterdir()) == ["cifar-10-python.tar.gz"]  # no partial folder
    assert not (data_dir.parent / "escaped.txt").exists() and not (data_dir / "escaped.txt").exists()


def test_the_instruction_set_is_read_from_the_cpu_flags():
    from cifarkit.device import cpu_instruction_set

    zen2 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
    zen5 = "flags\t\t: avx2 avx512f avx512bw avx512_bf16 avx512_vnni\n"
    sapphire = "flags\t\t: avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
    assert cpu_instruction_set(zen2) == "AVX2"
    assert cpu_instruction_set(zen5) == "AVX2, AVX-512, AVX512-VNNI, AVX512-BF16"
    assert cpu_instruction_set(sapphire) == "AVX2, AVX-512, AVX512-BF16, AMX"
    assert cpu_instruction_set("") not in ("", "AVX2")  # no flags (macOS, ARM): the architecture


def test_env_records_the_kernels_pytorch_uses_not_only_what_the_cpu_has():
    """A run with PyTorch's CPU kernels held to a lower level (ATEN_CPU_CAPABILITY, how an AVX2 machine was
    imitated on an AVX-512 one) says so in env.json, beside the CPU's own instruction sets."""
    import subprocess
    import sys

    code = "import json; from cifarkit.device import env_info; print(json.dumps(env_info()['torch_cpu_kernels']))"
    held = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "ATEN_CPU_CAPABILITY": "default"},
        capture_output=True,
        text=True,
    )
    assert held.returncode == 0, held.stderr
    assert json.loads(held.stdout.strip().splitlines()[-1]) == "DEFAULT"
