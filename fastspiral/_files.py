"""Replacing a file atomically, as ``open(path, "w")`` users expect: saved models and results files.

A temporary file beside the target is written, flushed to disk and renamed
over it, so an interrupted save never leaves a truncated file. :func:`check_npz` is the reading side: an archive is checked before
``np.load`` allocates what its members declare.

Unlike a bare
``mkstemp`` + ``os.replace`` it

* writes through a symlink to its target (``open`` and ``np.savez`` do;
  renaming over the link would replace the link with a file),
* refuses to replace anything but a regular file (a device such as
  ``/dev/full``, a FIFO, a folder), and
* gives a new file the mode ``open`` would (0666 less the umask; mkstemp's
  0600 hid results from the rest of a group), and an existing file its own.
"""

from __future__ import annotations

import math
import os
import stat
import uuid
import zipfile
from collections.abc import Callable, Collection, Mapping
from typing import IO

import numpy as np

#: Largest ratio of an .npz member's size to its compressed size (np.savez stores, 1:1).
MAX_EXPANSION = 100


def check_writable_path(path: str | os.PathLike, what: str) -> str:
    """The real path ``path`` would be written to, or OSError/ValueError now, before any work.

    The folder must exist and be writable, and what stands at the path (if
    anything) must be a regular file.
    """
    path = os.fspath(path)
    target = os.path.realpath(path)  # through symlinks, as open() goes
    folder = os.path.dirname(target)
    if os.path.lexists(target) and not stat.S_ISREG(os.stat(target).st_mode):
        raise ValueError(
            f"{what} {path!r} exists and is not a regular file; refusing to replace it"
        )
    if not os.path.isdir(folder):
        raise OSError(f"cannot write {what} {path!r}: the folder {folder!r} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OSError(f"cannot write {what} {path!r}: the folder {folder!r} is not writable")
    return target


def replace_file(
    path: str | os.PathLike, write: Callable[[IO[bytes]], None], what: str = "file"
) -> None:
    """Call ``write(fh)`` on a binary temporary file, flushed to disk, then move it to ``path`` atomically."""

    def to_path(tmp: str) -> None:
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
        except OSError as exc:
            raise OSError(
                exc.errno, f"cannot write {what} {os.fspath(path)!r}: {exc.strerror}"
            ) from exc
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())

    replace_path(path, to_path, what)


def replace_path(path: str | os.PathLike, write: Callable[[str], None], what: str = "file") -> None:
    """``write(tmp)`` to a temporary name beside the target (with ``path``'s suffix, for writers
    that pick a format by it, as matplotlib's animation writers do), then move it into place;
    an existing file's mode is kept."""
    target = check_writable_path(path, what)
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = None
    folder, name = os.path.split(target)
    stem, suffix = os.path.splitext(name)
    tmp = os.path.join(folder, f".{stem}.{uuid.uuid4().hex[:12]}.tmp{suffix}")
    try:
        write(tmp)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def replace_text(path: str | os.PathLike, text: str, what: str = "file") -> None:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically."""
    replace_file(path, lambda fh: fh.write(text.encode("utf-8")), what)


def check_npz(
    path: str | os.PathLike,
    names: Collection[str] | None = None,
    max_bytes: Mapping[str, int] | None = None,
) -> None:
    """Refuse an .npz archive whose arrays would need more memory than the file accounts for.

    Each member must be an .npy array whose declared shape and dtype account
    for its bytes exactly, none may be compressed far below its size, none may
    appear twice, and (when given) only ``names`` may appear, each within
    ``max_bytes``. Otherwise a small file could make ``np.load`` allocate
    gigabytes before failing (tests/test_model.py::test_load_refuses_damaged_and_hostile_files).
    Raises ValueError (or OSError, zipfile.BadZipFile) without naming the path.
    """
    with zipfile.ZipFile(path) as zf:
        members = zf.infolist()
        seen = [m.filename for m in members]
        if len(set(seen)) != len(seen):
            raise ValueError("a member appears more than once")
        for member in members:
            if names is not None and member.filename not in names:
                raise ValueError(f"unexpected member {member.filename!r}")
            limit = (max_bytes or {}).get(member.filename)
            if limit is not None and member.file_size > limit:
                raise ValueError(
                    f"{member.filename} is {member.file_size:,} bytes (at most {limit:,})"
                )
            if member.file_size > MAX_EXPANSION * member.compress_size + 2**20:
                raise ValueError(
                    f"{member.filename} expands from {member.compress_size:,} to "
                    f"{member.file_size:,} bytes"
                )
            with zf.open(member) as fh:
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
                else:
                    raise ValueError(f"{member.filename} has .npy format version {version}")
                declared, held = math.prod(shape) * dtype.itemsize, member.file_size - fh.tell()
                if declared != held:
                    raise ValueError(
                        f"{member.filename} declares {declared:,} bytes of data but holds {held:,}"
                    )
