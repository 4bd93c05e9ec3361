"""Shared fixtures: tiny datasets written in the real on-disk formats (CIFAR python batches, image folders)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cifarkit.cli import main
from cifarkit.data import make_synthetic


def write_cifar10_batches(root: Path, per_batch: int = 20, seed: int = 0) -> Path:
    """Write cifar-10-batches-py/ with five data batches, a test batch and batches.meta."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(x) for x in np.arange(per_batch) % 10]
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"data": data, b"labels": labels, b"filenames": []}, f)
    meta = {
        b"label_names": [
            c.encode()
            for c in ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
        ],
        b"num_vis": 3072,
    }
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(meta, f)
    return folder


def write_cifar100(root: Path, n: int = 50, seed: int = 0) -> Path:
    """Write cifar-100-python/ with train, test and meta (fine and coarse labels)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name in ("train", "test"):
        fine = [int(x) for x in np.arange(n) % 100]
        batch = {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"fine_labels": fine,
            b"coarse_labels": [f // 5 for f in fine],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    meta = {
        b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
        b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)],
    }
    with open(folder / "meta", "wb") as f:
        pickle.dump(meta, f)
    return folder


def write_image_folder(
    root: Path, num_classes: int = 3, train: int = 12, test: int = 4, size: int = 32, fmt: str = "png"
) -> Path:
    """Write root/{train,test}/<class>/*.<fmt> from learnable synthetic images."""
    ds = make_synthetic(num_classes=num_classes, size=size, train_per_class=train, test_per_class=test)
    for split_name, split in (("train", ds.train), ("test", ds.test)):
        for i, (img, label) in enumerate(zip(split.images, split.labels, strict=True)):
            d = root / split_name / ds.classes[int(label)]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img.permute(1, 2, 0).numpy()).save(d / f"{i:04d}.{fmt}")
    return root


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty data folder used as CIFARKIT_DATA, so nothing touches the real data/."""
    d = tmp_path / "data"
    d.mkdir()
    monkeypatch.setenv("CIFARKIT_DATA", str(d))
    return d


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return write_image_folder(tmp_path / "imgs")


@pytest.fixture
def cli(capsys: pytest.CaptureFixture):
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse errors and --help
            code = int(exc.code or 0)
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``gpu`` tests cleanly where torch sees no CUDA/ROCm device (CI has none)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA/ROCm GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _data_outside_the_checkout(tmp_path_factory: pytest.TempPathFactory):
    """No test writes into the checkout: every dataset cache and download goes to a temporary folder (a test that
    needs another sets CIFARKIT_DATA itself, through monkeypatch)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("CIFARKIT_DATA", str(tmp_path_factory.mktemp("data")))
    yield
    mp.undo()


@pytest.fixture(autouse=True)
def _globals_restored():
    """Every test starts from the same process-wide settings and leaves them as it found them, however it ends:
    torch's thread count (2, as on CI), deterministic algorithms, the default dtype, the hooks for uncaught
    exceptions, the working folder and the environment. A leak here changed the arithmetic of later tests."""
    import os
    import sys
    import threading

    torch.set_num_threads(2)
    saved = (
        torch.get_num_threads(),
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.get_default_dtype(),
        threading.excepthook,
        sys.excepthook,
        os.getcwd(),
        dict(os.environ),
    )
    yield
    threads, deterministic, warn_only, dtype, thread_hook, hook, cwd, environ = saved
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    torch.set_default_dtype(dtype)
    threading.excepthook, sys.excepthook = thread_hook, hook
    os.chdir(cwd)
    if dict(os.environ) != environ:
        os.environ.clear()
        os.environ.update(environ)


# for on_small_disk: the files of sys.argv[3] (JSON, path on the disk -> text) are written, then the command line of
# sys.argv[2] (JSON, "{disk}" standing for the disk) runs; prints its exit code, stderr and the disk's files and sizes
CLI_ON_A_SMALL_DISK = """
import json, subprocess, sys
from pathlib import Path
disk = Path(sys.argv[1])
for name, text in json.loads(sys.argv[3]).items():
    (disk / name).parent.mkdir(parents=True, exist_ok=True)
    (disk / name).write_text(text)
args = [a.replace("{disk}", str(disk)) for a in json.loads(sys.argv[2])]
done = subprocess.run([sys.executable, "-m", "cifarkit", *args], capture_output=True, text=True, timeout=600)
files = {str(p.relative_to(disk)): p.stat().st_size for p in sorted(disk.rglob("*")) if p.is_file()}
print(json.dumps({"code": done.returncode, "err": done.stderr, "files": files}))
"""


@pytest.fixture
def on_small_disk(tmp_path: Path):
    """Run ``python -c code folder`` with ``folder`` a real tmpfs of ``kib`` KiB in a private mount namespace
    (``unshare -m`` as root, ``unshare -rm`` for anyone where the kernel allows user namespaces), so a test meets
    a full or read-only disk as it happens: from the kernel, in whatever thread writes. ``read_only`` remounts it
    read-only after ``folders`` are made on it; ``inodes`` limits how many files and folders it can hold, the
    disk's root included (a disk out of inodes is full to a new file however many bytes are free). Skips, saying
    why, where neither namespace can be made."""
    import os
    import subprocess
    import sys

    def run(
        code: str,
        kib: int,
        folders: tuple[str, ...] = (),
        read_only: bool = False,
        args: tuple[str, ...] = (),
        inodes: int | None = None,
    ):
        folder = tmp_path / "disk"
        folder.mkdir(exist_ok=True)
        limit = f",nr_inodes={inodes}" if inodes else ""
        steps = ['d="$1"; py="$2"; code="$3"; shift 3', f'mount -t tmpfs -o size={kib}k{limit} tmpfs "$d"']
        steps += [f'mkdir -p "$d/{name}"' for name in folders]
        steps += ['mount -o remount,ro "$d"'] if read_only else []
        script = steps[0] + "; " + " && ".join([*steps[1:], 'exec "$py" -c "$code" "$d" "$@"'])
        unshare = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-rm"]
        probe = subprocess.run([*unshare, "true"], capture_output=True, text=True)
        if probe.returncode != 0:
            pytest.skip(f"a real small disk needs a private mount namespace ({' '.join(unshare)}), which this "
                        f"machine refuses: {(probe.stderr or 'failed').strip().splitlines()[0]}")  # fmt: skip
        cmd = [*unshare, "sh", "-c", script, "sh", str(folder), sys.executable, code, *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300)

    return run
