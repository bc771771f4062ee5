"""Operator files in and out: checked inputs, outputs that never replace an input, atomic writes.

Rules every command follows:

- An input path must exist and be of the right kind (a file, or a folder); the error names the path
  and what it was expected to be (:func:`input_file`, :func:`input_folder`).
- An output never replaces or truncates an input of the same command (:func:`output_file`,
  :func:`output_folder`, given the inputs); its suffix is the one asked for, never appended behind
  the operator's back; its parent folder must exist (or be creatable) and be a folder.
- Outputs are written atomically: into a temporary file (or folder) next to the target, flushed to
  disk, then renamed over it (:func:`atomic_write`, :func:`atomic_folder`). A crash leaves the old
  file (or none) in place, never a half-written one.

Errors are :class:`~handover.runtime.errors.InputError` (one line, exit code 2 in the CLI).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

import numpy as np

from handover.runtime.errors import InputError


def input_file(path, what: str) -> Path:
    """``path`` as an existing regular file, or :class:`InputError` saying what ``what`` needed."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: {what} not found")
    if p.is_dir():
        raise InputError(f"{p}: {what} is a folder, expected a file")
    if not p.is_file():
        raise InputError(f"{p}: {what} is not a regular file")
    if not os.access(p, os.R_OK):
        raise InputError(f"{p}: {what} is not readable (permissions)")
    return p


def input_folder(path, what: str) -> Path:
    """``path`` as an existing folder, or :class:`InputError`."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: {what} not found")
    if not p.is_dir():
        raise InputError(f"{p}: {what} is a file, expected a folder")
    return p


def _same(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _check_parent(p: Path, what: str) -> None:
    for parent in [p.parent, *p.parent.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{p}: {what}: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK):
                raise InputError(f"{p}: {what}: {parent} is not writable")
            return


def output_file(path, what: str, suffix: Optional[str] = None, inputs: Iterable = ()) -> Path:
    """``path`` checked as an output file: the ``suffix`` it must end with (never appended
    silently), not a folder, not one of ``inputs`` (files or folders: not inside them either), its
    parent a folder (created by the writer)."""
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{p}: {what} is an existing folder, expected a file path")
    if suffix is not None and p.suffix != suffix:
        raise InputError(f"{p}: {what} must end in {suffix}")
    for i in inputs:
        if i is None:
            continue
        i = Path(i)
        if _same(p, i) or (i.is_dir() and _inside(p, i)) or p.resolve() == i.resolve():
            raise InputError(f"{p}: {what} would overwrite the input {i}; choose another path")
    _check_parent(p, what)
    return p


def output_folder(path, what: str, inputs: Iterable = ()) -> Path:
    """``path`` checked as an output folder (replaced as a whole by :func:`atomic_folder`): not a
    file, not one of ``inputs`` nor inside or around one of them."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise InputError(f"{p}: {what} is an existing file, expected a folder")
    for i in inputs:
        if i is None:
            continue
        i = Path(i)
        if _same(p, i) or _inside(i, p) or _inside(p, i):
            raise InputError(f"{p}: {what} would overwrite the input {i}; choose another folder")
    _check_parent(p, what)
    return p


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb") -> Iterator:
    """Open a temporary file next to ``path`` for writing; on success it is flushed, synced and
    renamed to ``path`` (replacing it); on an exception it is removed and ``path`` is untouched."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".partial", dir=p.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_write(path, "w") as f:
        f.write(text)
    return Path(path)


def save_npz(path, arrays: dict) -> Path:
    """``np.savez`` to exactly ``path``, atomically (numpy would append ``.npz`` to a path without it)."""
    with atomic_write(path) as f:
        np.savez(f, **arrays)
    return Path(path)


@contextlib.contextmanager
def atomic_folder(path) -> Iterator[Path]:
    """Yield a temporary folder next to ``path`` to fill; on success it replaces ``path`` (an old
    folder there is moved aside first and removed after the swap), on an exception it is removed
    and ``path`` is untouched."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{p.name}.", suffix=".partial", dir=p.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if p.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{p.name}.", suffix=".old", dir=p.parent))
        os.rmdir(old)
        os.replace(p, old)
    os.replace(tmp, p)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def load_npz(path, what: str) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` file (no pickled objects), or :class:`InputError` naming the file
    and why it is not a readable ``.npz`` (missing, a folder, empty, truncated, another format)."""
    p = input_file(path, what)
    if p.stat().st_size == 0:
        raise InputError(f"{p}: {what} is empty (0 bytes)")
    with open(p, "rb") as f:
        head = f.read(6)
    if not head.startswith(b"PK") and not head.startswith(b"\x93NUMPY"):
        raise InputError(f"{p}: {what} is not an .npz archive (it starts with {head!r}, not a zip header)")
    try:
        loaded = np.load(p, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"{p}: {what} is not a readable .npz file: {exc}") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise InputError(f"{p}: {what} is a single .npy array, not an .npz archive of named arrays")
    try:
        with loaded as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise InputError(f"{p}: {what} is truncated or corrupt: {type(exc).__name__}: {exc}") from None


def guarded(fn: Callable, where: str, errors: tuple = (OSError,)):
    """Call ``fn()``; the given errors become an :class:`InputError` naming ``where``."""
    try:
        return fn()
    except errors as exc:
        raise InputError(f"{where}: {type(exc).__name__}: {exc}") from None
