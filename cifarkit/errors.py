"""User-facing error types: anything a user can cause is raised as a CifarkitError."""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Mapping, Sequence

EXIT_USAGE = 2  # a bad argument, dataset or checkpoint: fix the command and run it again
EXIT_FAILED = 1  # the command was right but the run failed (diverged, disk full, an image that cannot be read)
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report a process stopped by SIGINT (128 + 2)


class CifarkitError(Exception):
    """A mistake the user can fix; the CLI prints it as one line without a traceback."""

    exit_code = EXIT_USAGE


class DataError(CifarkitError):
    """A dataset is missing, unreadable or malformed."""


class CheckpointError(CifarkitError):
    """A checkpoint is missing, not a cifarkit checkpoint, or does not fit the data."""


class ConfigError(CifarkitError, ValueError):
    """A configuration value is out of range or unknown."""


class OutputError(CifarkitError):
    """An output folder cannot be created or written (a path under a regular file, a read-only mount)."""


class DiskFull(OutputError):
    """The disk filled while something was written (a checkpoint, a notebook's cell): what finished is kept."""

    exit_code = EXIT_FAILED


class TrainingDiverged(CifarkitError):
    """The training loss became NaN or infinite; the last good checkpoints are kept."""

    exit_code = EXIT_FAILED


class RankLost(CifarkitError):
    """Another process of a distributed run stopped (it failed, was killed or lost the network)."""

    exit_code = EXIT_FAILED


def short_list(names: Sequence[str], limit: int = 5) -> str:
    """``a, b, c`` or, past ``limit`` names, ``a, b, c, d, e, ... (100 in all)``, for error messages."""
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown}, ... ({len(names)} in all)"


def os_error_line(exc: OSError) -> str:
    """One line for an operating-system error met while reading or writing files, saying what to do."""
    where = exc.filename or "a file"
    reason = exc.strerror or exc.__class__.__name__
    if exc.errno == errno.ENOSPC or exc.errno == errno.EDQUOT:
        return f"disk full while writing {where}; free some space and run the command again"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"cannot write {where} ({reason}); choose a writable folder (e.g. --out)"
    if exc.errno == errno.EFBIG:
        return f"{where}: file too large for this process's file-size limit (ulimit -f); raise the limit and run again"
    if exc.errno == errno.ENOTDIR:
        return f"{where}: part of this path is a regular file, not a folder; choose another path"
    if exc.errno == errno.ENOENT:
        return f"{where}: file not found"
    return f"{where}: {reason}"


def out_of_memory_line(exc: BaseException) -> str | None:
    """One line for a device or the host running out of memory (torch's OutOfMemoryError on CUDA/ROCm, the MPS
    and CPU allocators' RuntimeError, Python's MemoryError), saying what to lower; None for any other error."""
    text, said = str(exc), ("out of memory", "can't allocate memory", "bad_alloc")  # CUDA/MPS, CPU, C++
    if not (isinstance(exc, MemoryError) or any(s in text for s in said)):
        return None
    fix = "lower --batch-size, or train with a smaller --image-size or --model"
    asked = re.search(r"[Tt]ried to allocate (\d+(?:\.\d+)? ?[KMGT]i?B|(\d+) bytes)", text)
    if asked is None:
        return f"out of memory; {fix}"
    size = asked[1] if asked[2] is None else f"{int(asked[2]) / 2**30:,.1f} GiB"  # the CPU allocator counts bytes
    return f"out of memory (it tried to allocate {size}); {fix}"


def duration_text(seconds: float) -> str:
    """A duration as a person says it: "40 s", "3.5 min", "1.2 h" (never "0 min")."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def rank_tag(environ: Mapping[str, str] | None = None) -> str:
    """`` (rank 1 of 2)`` for the messages of a process torchrun started with several ranks, else ``""``."""
    env = os.environ if environ is None else environ
    rank, world = env.get("RANK", ""), env.get("WORLD_SIZE", "")
    return f" (rank {rank} of {world})" if rank.isdigit() and world.isdigit() and int(world) > 1 else ""


def first_line(exc: BaseException, named: bool = False, limit: int = 160) -> str:
    """An exception inside a one-line message: its first line that says what is wrong (load_state_dict's
    "Error(s) in ..." header passed over), after its class name with ``named``, cut at ``limit`` characters; the
    class name alone where it says nothing (an empty message, or one that opens with a blank line)."""
    said = next((x.strip() for x in str(exc).splitlines() if x.strip() and not x.startswith("Error(s) in")), "")
    return (f"{type(exc).__name__}: {said}" if said and named else said or type(exc).__name__)[:limit]


def printable(text: object) -> str:
    """``text`` safe to print as one line on any terminal: control characters (a newline in a file name)
    become escapes such as ``\\n``, and bytes that are not UTF-8 (kept by Python as surrogates) ``\\xNN``."""
    out = []
    for ch in str(text):
        cp = ord(ch)
        if 0xDC80 <= cp <= 0xDCFF:  # an undecodable byte of a file name
            out.append(f"\\x{cp - 0xDC00:02x}")
        elif cp < 32 or 127 <= cp < 160 or 0xD800 <= cp < 0xE000:
            out.append(repr(ch)[1:-1])
        else:
            out.append(ch)
    return "".join(out)
