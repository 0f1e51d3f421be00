"""Atomic writes, run-folder locks and content hashes, shared by checkpoints, caches,
engines and reports."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from fogreid.errors import FogreidError

# A temporary file is `.<name>.fogreid-<pid>-<random>.tmp`. The `fogreid-` marker is what makes
# it ours: cleanup touches nothing else, however much a user's own `.draft.tmp` looks like one.
# The pid tells a live writer's file from a killed one's.
_TMP_MARKER = "fogreid-"
_TMP = re.compile(r"^\..+\." + _TMP_MARKER + r"(\d+)-[A-Za-z0-9_]+\.tmp$")


@functools.lru_cache(maxsize=1)  # os.umask can only be read by setting it: once per process
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process (or a number no pid can be)
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def clean_stale_tmp(folder: str | Path) -> list[Path]:
    """Remove the temporary files that killed fogreid writers left in `folder`; returns them.
    Only names with fogreid's marker count: a user's own `.x.tmp` files are never touched."""
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            match = _TMP.match(entry.name)
            if not match or not entry.is_file(follow_symlinks=False):
                continue
            if not _alive(int(match.group(1))):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Write to a temporary file beside `path`, then rename it over `path`.

    A crash or a kill mid-write leaves the previous file intact, never a truncated one; the
    next write into the same folder removes what the killed one left. The file gets the
    permissions of a plain `open()` (0666 less the umask), not mkstemp's private 0600, so
    a server running as another user can read a checkpoint, a model or a report.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_tmp(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_TMP_MARKER}{os.getpid()}-", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str) -> Iterator[None]:
    """Hold `folder/.fogreid.lock` for the block: a second run into the same folder is refused
    at once instead of interleaving its metrics and overwriting the first run's checkpoints.
    The OS drops the lock when the process dies, so a killed run never leaves it stuck."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks
        yield
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / ".fogreid.lock", "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise FogreidError(f"--out {folder}: {holder} is writing there now; wait for it to finish or "
                               f"choose another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{what} (pid {os.getpid()})\n")
        handle.flush()
        yield
    finally:
        handle.close()


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)  # the same file under another name: ./x, a symlink, a hard link
    except OSError:  # one is not there (yet): compare where both paths lead
        try:
            return a.resolve() == b.resolve()
        except (OSError, RuntimeError):  # a symlink loop: not a file anyone can read
            return False


def refuse_outputs_over_inputs(outputs: dict[str, str | Path | list | None],
                               inputs: dict[str, str | Path | list | None]) -> None:
    """Refuse, before any work, an output path that is an input, or another output.

    Writing an output truncates, replaces or appends to the file at its path: named after the
    checkpoint, the source video or the gallery being read, it destroys what the user asked
    fogreid to read (issue 23). Keys are option names (for the message), values a path, a list
    of paths or None; an output folder that is an input file is caught the same way."""
    def named(options: dict) -> list[tuple[str, Path]]:
        return [(option, Path(value)) for option, values in options.items()
                for value in (values if isinstance(values, (list, tuple)) else [values]) if value]

    written = named(outputs)
    for i, (option, path) in enumerate(written):
        for other, source in named(inputs):
            if _same_file(path, source):
                harm = ("fogreid would write its files among what it reads" if source.is_dir()
                        else "writing there would destroy it")
                raise FogreidError(f"{option} {path}: is the {other} input; {harm}: choose another {option}")
        for other, earlier in written[:i]:
            if _same_file(path, earlier):
                raise FogreidError(f"{option} {path}: is also {other}; give each output its own path")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
