"""Datasets as uint8 tensors: CIFAR archives, image folders, synthetic data; stats, splits, duplicates."""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import shutil
import tarfile
import urllib.error
import warnings
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cifarkit.config import DATASET_HELP, check_value, count, fraction, positive_int
from cifarkit.errors import DataError, OutputError, printable, short_list
from cifarkit.runs import ensure_dir, remove_temporaries, save_blob

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# Published per-channel statistics of the training images, in [0, 1] units.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
FOLDER_CACHE_VERSION = 1


@dataclass(frozen=True)
class CifarArchive:
    """Where an official CIFAR archive lives and how to check it."""

    filename: str
    url: str
    md5: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str


CIFAR_ARCHIVES = {
    "cifar10": CifarArchive(
        filename="cifar-10-python.tar.gz",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        meta_file="batches.meta",
    ),
    "cifar100": CifarArchive(
        filename="cifar-100-python.tar.gz",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        folder="cifar-100-python",
        train_files=("train",),
        test_files=("test",),
        meta_file="meta",
    ),
}


@dataclass
class Split:
    """One split of a dataset: images (N, 3, H, W) uint8 and labels (N,) int64."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise DataError(f"images must be uint8 (N, 3, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise DataError(f"{self.images.shape[0]} images but labels of shape {tuple(self.labels.shape)}")
        self.labels = self.labels.long()

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: torch.Tensor) -> Split:
        """Return the images and labels at ``index``."""
        return Split(self.images[index], self.labels[index])

    def pick(self, n: int, seed: int = 0) -> Split:
        """Exactly ``min(n, len)`` images for a demo or a statistic: seeded, and spread over the classes
        (one of each class in a random class order, then a second of each, ...), never the first ``n``
        of a class-sorted folder."""
        check_value("pick(n)", n, count)
        return self.subset(interleaved_indices(self.labels, n, seed))

    def hold_out(self, fraction: float, seed: int) -> tuple[Split, Split]:
        """(train, validation): a seeded, stratified ``fraction`` held out, as training runs split it; the
        same (fraction, seed) gives the same images again (resume, analysis, deploy-bench)."""
        train_idx, val_idx = stratified_split(self.labels, fraction, seed)
        return self.subset(train_idx), self.subset(val_idx)

    def sample(self, limit: int | None, seed: int = 0) -> Split:
        """At most ``limit`` images, stratified by class and seeded (None, or a limit >= the size: all)."""
        if limit is not None:
            check_value("sample(limit)", limit, positive_int)
        if limit is None or limit >= len(self):
            return self
        _, keep = stratified_split(self.labels, limit / len(self), seed)
        return self.subset(keep)


@dataclass
class Dataset:
    """A named dataset: class names, normalisation and the splits it has."""

    name: str
    classes: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    train: Split | None = None
    test: Split | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        split = self.train if self.train is not None else self.test
        assert split is not None
        return int(split.images.shape[-1])

    def subsample(self, train: int | None = None, test: int | None = None, seed: int = 0) -> Dataset:
        """A copy keeping at most ``train`` / ``test`` images per split, stratified by class (None: keep all)."""

        def cut(split: Split | None, limit: int | None) -> Split | None:
            return None if split is None else split.sample(limit, seed)

        return Dataset(self.name, self.classes, self.mean, self.std, cut(self.train, train), cut(self.test, test))

    def with_class_order(self, classes: Sequence[str]) -> Dataset:
        """The same images with labels renumbered so that label ``i`` means ``classes[i]``.

        ``classes`` must name the same classes as this dataset, in any order (a checkpoint's order).
        """
        classes = tuple(classes)
        if classes == self.classes:
            return self
        if sorted(classes) != sorted(self.classes):
            raise DataError(f"{self.name} has classes {', '.join(self.classes)}, not {', '.join(classes)}")
        new_index = torch.tensor([classes.index(c) for c in self.classes], dtype=torch.long)

        def relabel(split: Split | None) -> Split | None:
            return None if split is None else Split(split.images, new_index[split.labels])

        return Dataset(self.name, classes, self.mean, self.std, relabel(self.train), relabel(self.test))

    def split(self, name: str) -> Split:
        """Return the split called ``name`` ("train" or "test"), or fail clearly."""
        value = {"train": self.train, "test": self.test}.get(name)
        if name not in ("train", "test"):
            raise DataError(f"unknown split {name!r}; choose train or test")
        if value is None:
            raise DataError(f"dataset {self.name} has no {name} split")
        return value


# ----------------------------------------------------------------------------- locations


def project_root() -> Path | None:
    """The source checkout holding this package, if it is one (has pyproject.toml)."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() else None


def default_data_dir() -> Path:
    """``$CIFARKIT_DATA``, else ``data/`` of the checkout, else ``./data``.

    Notebooks run with ``notebooks/`` as working directory, so a plain relative path would
    put a second copy of every dataset there.
    """
    if os.environ.get("CIFARKIT_DATA"):
        return Path(os.environ["CIFARKIT_DATA"]).expanduser()
    root = project_root()
    return root / "data" if root is not None else Path("data")


def resolve_user_path(path: str | os.PathLike) -> Path:
    """Resolve a user path against the working directory, then the project root."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    root = project_root()
    if root is not None and (root / p).exists():
        return root / p
    return p


# ----------------------------------------------------------------------------- CIFAR


def download_archive(archive: CifarArchive, data_dir: Path) -> Path:
    """Download ``archive`` into ``data_dir`` with torchvision's downloader, verify its MD5, then move it
    into place (a ``.part`` file until verified, so an interrupted download never looks complete)."""
    from torchvision.datasets.utils import check_integrity, download_url  # seconds to import; only here

    target = data_dir / archive.filename
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        writable = os.access(data_dir, os.W_OK)
    except OSError:
        writable = False
    if not writable:
        raise DataError(
            f"cannot download {archive.filename}: {data_dir} is not a writable folder; set --data-dir or "
            f"CIFARKIT_DATA to one, or place {archive.filename} (or its extracted {archive.folder}/) there"
        )
    part = archive.filename + ".part"
    try:
        download_url(archive.url, str(data_dir), filename=part, md5=archive.md5)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise DataError(
            f"cannot download {archive.url} ({exc}); offline? place {archive.filename} in {data_dir}/ "
            f"or use --dataset folder:PATH"
        ) from None
    except RuntimeError:  # torchvision's "File not found or corrupted." after a checksum mismatch
        raise DataError(f"downloaded {archive.filename} has the wrong checksum; delete it and retry") from None
    finally:
        if not check_integrity(data_dir / part, archive.md5):
            with contextlib.suppress(OSError):
                (data_dir / part).unlink(missing_ok=True)
    (data_dir / part).replace(target)
    return target


def ensure_cifar(name: str, data_dir: Path, download: bool = True) -> Path:
    """Return the extracted batch folder for ``name``, downloading and extracting as needed."""
    from torchvision.datasets.utils import check_integrity  # seconds to import; only here

    archive = CIFAR_ARCHIVES[name]
    folder = data_dir / archive.folder
    if (folder / archive.meta_file).is_file():
        return folder
    tar_path = data_dir / archive.filename
    if not tar_path.is_file():
        if not download:
            raise DataError(f"{tar_path} not found; download {archive.url} and place it in {data_dir}/")
        download_archive(archive, data_dir)
    elif not check_integrity(tar_path, archive.md5):
        raise DataError(f"{tar_path} is corrupt (checksum mismatch); delete it and download {archive.url} again")
    for stale in data_dir.glob(f".extract-{archive.folder}-*"):  # a staging folder a killed run left behind
        shutil.rmtree(stale, ignore_errors=True)
    stage = data_dir / f".extract-{archive.folder}-{os.getpid()}"  # moved into place whole, never left partial
    try:  # not torchvision's extract_archive: it extracts without tarfile's "data" filter
        with tarfile.open(tar_path, "r:gz") as tar:
            check_members(tar)
            try:
                tar.extractall(stage, filter="data")  # refuses absolute paths and links out of the folder
            except TypeError:  # Python < 3.10.12 has no extraction filters; the checksum vouches for the archive
                tar.extractall(stage)
        if not (stage / archive.folder / archive.meta_file).is_file():
            raise DataError(f"{tar_path} did not contain {archive.folder}/{archive.meta_file}; the right archive?")
        shutil.rmtree(folder, ignore_errors=True)  # an incomplete folder from before (no meta file): replaced
        os.replace(stage / archive.folder, folder)
    except (tarfile.TarError, EOFError, zlib.error) as exc:  # a member outside the folder, a link out, a short file
        why = f"{exc.__class__.__name__}: {printable(exc)}"
        raise DataError(f"{tar_path} is not a usable CIFAR archive ({why}); get the official one") from None
    except OSError as exc:
        raise DataError(
            f"cannot extract {tar_path} into {data_dir} ({exc.strerror or exc}); free space or set --data-dir "
            "or CIFARKIT_DATA to a writable folder"
        ) from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return folder


# the largest file of either official archive is CIFAR-100's train (about 155 MB), both unpack to under 200 MB
MAX_MEMBER_BYTES, MAX_ARCHIVE_BYTES = 200 * 2**20, 400 * 2**20


def check_members(tar: tarfile.TarFile) -> None:
    """Refuse, before anything is written, an archive that unpacks to more than a CIFAR one (a zip bomb)."""
    sizes = [m.size for m in tar.getmembers()]
    if max(sizes, default=0) > MAX_MEMBER_BYTES or sum(sizes) > MAX_ARCHIVE_BYTES:
        raise tarfile.TarError(f"it unpacks to {sum(sizes) / 2**20:,.0f} MB, more than a CIFAR archive holds")


class CifarUnpickler(pickle.Unpickler):
    """Reads a CIFAR python batch as data only: the official files hold a dict of bytes, ints, lists and
    numpy arrays, so those are the only classes it will build; anything else (a crafted file naming
    ``os.system``, say) is refused before it can run."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),  # how numpy 1.x pickled arrays (the official files)
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),  # protocol 5 arrays
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),  # bytes pickled by Python 3 at protocol 2
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise DataError(f"holds {module}.{name}, which no CIFAR batch contains")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"missing CIFAR batch file {path}; delete the folder and extract the archive again")
    try:
        with open(path, "rb") as f:
            batch = CifarUnpickler(f, encoding="bytes").load()
    except DataError as exc:
        raise DataError(
            f"{path} is not a CIFAR batch: it {exc}; delete the folder and extract the official archive again"
        ) from None
    except Exception as exc:  # a truncated or foreign file
        raise DataError(f"cannot read CIFAR batch {path} ({exc.__class__.__name__}); re-extract the archive") from None
    if not isinstance(batch, dict):
        raise DataError(f"{path} is not a CIFAR batch (a {type(batch).__name__}, not a dict); re-extract the archive")
    return batch


def read_cifar_batches(folder: Path, files: Iterable[str], label_key: bytes) -> Split:
    """Read CIFAR python batches into one uint8 split (no per-image work)."""
    images, labels = [], []
    for name in files:
        batch = _unpickle(folder / name)
        if b"data" not in batch or label_key not in batch:
            raise DataError(f"{folder / name} is not a CIFAR batch (no {label_key.decode()} key)")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    return Split(torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)))


def load_cifar(name: str, data_dir: Path, coarse: bool = False, download: bool = True) -> Dataset:
    """Load CIFAR-10 or CIFAR-100 (fine labels, or coarse with ``coarse=True``)."""
    archive = CIFAR_ARCHIVES[name]
    folder = ensure_cifar(name, data_dir, download=download)
    meta = _unpickle(folder / archive.meta_file)
    if name == "cifar10":
        label_key, names_key, mean, std = b"labels", b"label_names", CIFAR10_MEAN, CIFAR10_STD
    else:
        label_key = b"coarse_labels" if coarse else b"fine_labels"
        names_key = b"coarse_label_names" if coarse else b"fine_label_names"
        mean, std = CIFAR100_MEAN, CIFAR100_STD
    classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in meta[names_key])
    return Dataset(
        name=name + (":coarse" if coarse else ""),
        classes=classes,
        mean=mean,
        std=std,
        train=read_cifar_batches(folder, archive.train_files, label_key),
        test=read_cifar_batches(folder, archive.test_files, label_key),
    )


# ----------------------------------------------------------------------------- image folders


def image_files(folder: Path) -> list[Path]:
    """The image files below ``folder`` in ``ImageFolder``'s order (folders by path, files by name).

    Only regular files count (a FIFO or socket named ``*.png`` would block a reader forever), and
    links to folders are followed once: a link back to a folder being walked (``again -> ..``) is a loop
    and is refused in one line, rather than walked until the path is too long to open; a folder reached
    by two links is read once.
    """
    found: dict[str, list[str]] = {}
    ancestors: list[tuple[int, int]] = []
    visited: set[tuple[int, int]] = set()

    def walk(path: Path) -> None:
        st = path.stat()
        key = (st.st_dev, st.st_ino)
        if key in ancestors:
            raise DataError(f"{path} links back to a folder that contains it (a loop); remove the link")
        if key in visited:  # a second link to a folder already read: its images count once
            return
        visited.add(key)
        ancestors.append(key)
        files = found.setdefault(str(path), [])
        for entry in sorted(os.scandir(path), key=lambda e: e.name):
            try:
                if entry.is_dir():  # follows links
                    walk(Path(entry.path))
                elif entry.is_file() and entry.name.lower().endswith(IMAGE_SUFFIXES):  # regular files only
                    files.append(entry.name)
            except OSError:  # a dangling link or an entry that vanished: not an image
                continue
        ancestors.pop()

    walk(folder)
    return [Path(root) / name for root in sorted(found) for name in found[root]]


def list_image_folder(split_dir: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """Classes (sorted sub-folders, hidden ones such as ``.ipynb_checkpoints`` skipped) and (file, label)
    pairs of ``split_dir/<class>/**``, in the order torchvision's ``ImageFolder`` lists them."""
    try:
        classes = sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        classes = []
    if not classes:
        raise DataError(f"{split_dir} has no class sub-folders; expected {split_dir}/<class>/<image>")
    for c in classes:  # class names go into reports, JSON and checkpoints: they must be text
        try:
            c.encode("utf-8")
        except UnicodeEncodeError:
            raise DataError(
                f"class folder {printable(split_dir / c)} has a name that is not UTF-8 text; rename it"
            ) from None
    items = [(path, label) for label, c in enumerate(classes) for path in image_files(split_dir / c)]
    empty = sorted(set(classes) - {classes[label] for _, label in items})
    if empty:
        raise DataError(
            f"class folder {split_dir / empty[0]} has no images ({', '.join(IMAGE_SUFFIXES)})"
            + (f"; nor have {short_list(empty[1:])}" if len(empty) > 1 else "")
        )
    return classes, items


def pil_to_array(img, size: int) -> np.ndarray:
    """A PIL image -> RGB uint8 (3, size, size): first frame, EXIF rotation, alpha composited on white."""
    from PIL import Image, ImageOps

    if 0 in img.size:
        raise DataError(f"an image of {img.size[0]}x{img.size[1]} pixels has nothing to classify")
    img.seek(0)  # first frame of animations
    img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    img = img.convert("RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy()


def decode_image(path: Path, size: int) -> np.ndarray:
    """Decode one image file (any format PIL reads) to RGB uint8 (3, size, size), or fail naming the file."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return pil_to_array(img, size)
    except Exception as exc:
        reason = f"{exc.__class__.__name__}: {exc}".replace("\n", " ")
        raise DataError(f"cannot read image {path}: {reason}; remove or replace the file") from None


def folder_fingerprint(items: list[tuple[Path, int]], classes: list[str], size: int) -> str:
    """A key that changes when any file is added, removed, renamed, resized or touched."""
    h = hashlib.sha1(f"v{FOLDER_CACHE_VERSION}|{size}|{'|'.join(classes)}".encode())
    for path, label in items:
        st = path.stat()
        h.update(f"{path.as_posix()}|{label}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def read_image_folder(
    split_dir: Path, size: int, cache_dir: Path | None, progress: bool = False
) -> tuple[list[str], Split]:
    """Decode every image of ``split_dir`` once; reuse the cached tensor while the folder is unchanged."""
    classes, items = list_image_folder(split_dir)
    key = folder_fingerprint(items, classes, size)
    cache = cache_dir / f"folder-{split_dir.name}-{key}.pt" if cache_dir is not None else None
    if cache is not None and cache.is_file():
        try:
            blob = torch.load(cache, weights_only=True)
            split = Split(blob["images"], blob["labels"])
            if tuple(split.images.shape) != (len(items), 3, size, size) or list(blob["classes"]) != list(classes):
                raise DataError("the cache does not hold this folder's images")
            return list(blob["classes"]), split
        except Exception:
            cache.unlink(missing_ok=True)  # a corrupt, truncated or stale cache is rebuilt, never trusted
    images = np.empty((len(items), 3, size, size), dtype=np.uint8)
    listed = enumerate(items)
    if progress:  # the first load of a large folder takes a minute on a small CPU; later ones read the cache
        from tqdm.auto import tqdm

        listed = tqdm(listed, total=len(items), desc=f"decoding {split_dir.name}/ (once; cached after)", unit="img")
    for i, (path, _) in listed:
        images[i] = decode_image(path, size)
    split = Split(torch.from_numpy(images), torch.tensor([label for _, label in items], dtype=torch.long))
    if cache is not None:
        remove_temporaries(cache.parent, older_than=3600)  # of cache writes a kill -9 cut short (they take seconds)
        blob = {"classes": classes, "images": split.images, "labels": split.labels}
        try:
            save_blob(cache, blob)
        except OSError as exc:  # a full data folder: run on, decode again next time
            warnings.warn(
                f"cannot write the decoded-image cache {cache} ({exc.strerror}); continuing without it", stacklevel=2
            )
    return classes, split


def load_folder(path: str, data_dir: Path, size: int = 32, progress: bool = False) -> Dataset:
    """Load ``PATH/train/<class>/*`` and ``PATH/test/<class>/*``; either may be absent, not both."""
    root = resolve_user_path(path)
    if not root.is_dir():
        state = "is a file, not a folder" if root.exists() else "not found"
        raise DataError(f"dataset folder {path} {state}; expected {path}/train/<class>/ and {path}/test/<class>/")
    cache_dir: Path | None = data_dir / "cache"
    try:
        ensure_dir(cache_dir, "dataset cache folder")
    except OutputError:  # a read-only data folder, or one under a regular file: decode without a cache
        warnings.warn(
            f"no decoded-image cache: {cache_dir} cannot be created or written, so images are decoded on every "
            "run (set --data-dir or CIFARKIT_DATA to a writable folder)",
            stacklevel=2,
        )
        cache_dir = None
    splits: dict[str, Split] = {}
    classes: list[str] | None = None
    for name in ("train", "test"):
        if (root / name).is_dir():
            split_classes, splits[name] = read_image_folder(root / name, size, cache_dir, progress)
            if classes is not None and split_classes != classes:
                raise DataError(f"{root}/train and {root}/test have different class folders; make them match")
            classes = split_classes
    if classes is None:
        raise DataError(f"{root} has neither train/ nor test/; expected {root}/train/<class>/<image>")
    stats_split = splits.get("train", splits.get("test"))
    mean, std = channel_stats(stats_split.images)
    return Dataset(f"folder:{root.name}", tuple(classes), mean, std, splits.get("train"), splits.get("test"))


# ----------------------------------------------------------------------------- synthetic


SYNTHETIC_MAX_GB = 4  # uint8 pixels; float copies made while drawing them need several times more


def make_synthetic(
    num_classes: int = 10, size: int = 32, train_per_class: int = 100, test_per_class: int = 20, seed: int = 0
) -> Dataset:
    """Small, learnable images: each class has its own colour and stripe orientation, plus noise.

    Args:
        num_classes: number of classes (2..1000).
        size: image side in pixels.
        train_per_class: training images per class.
        test_per_class: test images per class.
        seed: generator seed; the same arguments always give the same images.
    """
    if not 2 <= num_classes <= 1000 or not 8 <= size <= 512 or train_per_class < 1 or test_per_class < 1:
        raise DataError("synthetic needs 2-1000 classes, size 8-512 and at least one image per class and split")
    gigabytes = num_classes * (train_per_class + test_per_class) * size * size * 3 / 1e9
    if gigabytes > SYNTHETIC_MAX_GB:
        raise DataError(
            f"synthetic images of these sizes would take {gigabytes:,.1f} GB of memory (at most {SYNTHETIC_MAX_GB} GB); "
            "use fewer or smaller images"
        )
    g = torch.Generator().manual_seed(seed)
    colours = torch.rand(num_classes, 3, 1, 1, generator=g) * 0.6 + 0.2
    angles = torch.arange(num_classes, dtype=torch.float32) * (torch.pi / num_classes)
    freqs = 0.5 + (torch.arange(num_classes) % 3).float() * 0.35
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")

    def make(per_class: int) -> Split:
        labels = torch.arange(num_classes).repeat_interleave(per_class)
        n = labels.numel()
        phase = torch.rand(n, 1, 1, generator=g) * 2 * torch.pi
        proj = xx * torch.cos(angles[labels])[:, None, None] + yy * torch.sin(angles[labels])[:, None, None]
        stripes = torch.sin(proj * freqs[labels][:, None, None] + phase)[:, None]  # (n, 1, H, W)
        img = colours[labels] + 0.25 * stripes + 0.12 * torch.randn(n, 3, size, size, generator=g)
        images = (img.clamp(0, 1) * 255).round().to(torch.uint8)
        return Split(images, labels)

    train, test = make(train_per_class), make(test_per_class)
    mean, std = channel_stats(train.images)
    classes = tuple(f"class_{i:0{len(str(num_classes - 1))}d}" for i in range(num_classes))
    return Dataset("synthetic", classes, mean, std, train, test)


SYNTHETIC_KEYS = {
    "classes": "num_classes",
    "size": "size",
    "train": "train_per_class",
    "test": "test_per_class",
    "seed": "seed",
}


def parse_synthetic(options: str) -> dict[str, int]:
    """Parse ``classes=10,size=32,train=100,test=20,seed=0`` into make_synthetic kwargs."""
    kwargs: dict[str, int] = {}
    for part in filter(None, options.split(",")):
        key, _, value = part.partition("=")
        if key not in SYNTHETIC_KEYS or not value.isdigit():
            raise DataError(f"bad synthetic option {part!r}; use synthetic:classes=N,size=N,train=N,test=N,seed=N")
        kwargs[SYNTHETIC_KEYS[key]] = int(value)
    return kwargs


# ----------------------------------------------------------------------------- entry point


def load_dataset(
    spec: str,
    data_dir: str | os.PathLike | None = None,
    image_size: int = 32,
    download: bool = True,
    progress: bool = False,
) -> Dataset:
    """Load a dataset from its spec string.

    Args:
        spec: one of ``cifar10``, ``cifar100``, ``cifar100:coarse``, ``folder:PATH``,
            ``synthetic[:classes=N,size=N,train=N,test=N,seed=N]``.
        data_dir: where archives and caches live (default: :func:`default_data_dir`).
        image_size: side length folder images are decoded to (CIFAR is always 32).
        download: fetch missing CIFAR archives from the official site.
        progress: a progress bar while a folder's images are decoded (the first time; then they are cached).
    """
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    kind, _, arg = spec.partition(":")
    if kind in ("cifar10", "cifar100") and arg in ("", "coarse", "fine"):
        if kind == "cifar10" and arg:
            raise DataError("cifar10 has no coarse labels; use cifar10 or cifar100:coarse")
        return load_cifar(kind, root, coarse=arg == "coarse", download=download)
    if kind == "folder" and arg:
        return load_folder(arg, root, size=image_size, progress=progress)
    if kind == "synthetic":
        return make_synthetic(**parse_synthetic(arg))
    raise DataError(f"unknown dataset {spec!r}; choose {DATASET_HELP}")


# ----------------------------------------------------------------------------- statistics and checks


def channel_stats(images: torch.Tensor, chunk: int = 65536) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 images, in [0, 1] units, from how often each channel
    takes each of the 256 levels (exact integer counts; 10x faster than summing floats: 0.2 s for CIFAR-10's
    training images here). A channel that never varies (images of one colour) gets the std of one grey
    level, 1/255, so normalising it never divides by zero."""
    counts = torch.zeros(3, 256, dtype=torch.float64)
    for start in range(0, images.shape[0], chunk):
        part = images[start : start + chunk]
        counts += torch.stack([torch.bincount(part[:, c].reshape(-1), minlength=256) for c in range(3)])
    levels = torch.arange(256, dtype=torch.float64) / 255.0
    n = counts.sum(dim=1)
    mean = counts @ levels / n
    std = (counts @ (levels * levels) / n - mean * mean).clamp_min(0).sqrt().clamp_min(1 / 255)
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)


def interleaved_indices(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """``n`` indices that take the classes in turn (shuffled within each class and in class order, seeded)."""
    g = torch.Generator().manual_seed(seed)
    classes = torch.unique(labels)
    per_class = [torch.nonzero(labels == c).flatten() for c in classes[torch.randperm(len(classes), generator=g)]]
    per_class = [idx[torch.randperm(idx.numel(), generator=g)] for idx in per_class]
    rounds = max((idx.numel() for idx in per_class), default=0)
    order = [idx[r] for r in range(rounds) for idx in per_class if r < idx.numel()]
    return torch.stack(order[:n]) if order[:n] else torch.zeros(0, dtype=torch.long)


def stratified_split(labels: torch.Tensor, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded, stratified, disjoint train/validation indices (each class keeps its share).

    Kept rather than scikit-learn's ``train_test_split(stratify=...)``: every run's validation images are
    re-derived from its (seed, fraction) on ``--resume`` and in the notebooks' analysis, so another
    algorithm would move earlier runs' validation images into training."""
    check_value("val_fraction", val_fraction, fraction)
    g = torch.Generator().manual_seed(seed)
    train_idx, val_idx = [], []
    for cls in torch.unique(labels):
        idx = torch.nonzero(labels == cls).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=g)]
        n_val = int(round(idx.numel() * val_fraction))
        n_val = min(max(n_val, 1), idx.numel() - 1) if idx.numel() > 1 else 0
        val_idx.append(idx[:n_val])
        train_idx.append(idx[n_val:])
    return torch.cat(train_idx).sort().values, torch.cat(val_idx).sort().values
