"""Replacing a file atomically, as ``open(path, "w")`` users expect: saved models, results files,
figures; and opening files to read them.

A temporary file beside the target is written, flushed to disk and renamed
over it, so an interrupted save (an exception, Ctrl-C, SIGTERM or SIGHUP)
never leaves a truncated file, nor its temporary one. Unlike a bare
``mkstemp`` + ``os.replace`` it

* writes through a symlink to its target (``open`` and ``np.savez`` do;
  renaming over the link would replace the link with a file),
* refuses to replace anything but a regular file (a device such as
  ``/dev/full``, a FIFO, a folder), and a file the user may not write
  (PermissionError, as ``open`` gives; the rename itself needs only the
  folder's permission), and
* gives a new file the mode ``open`` would (0666 less the umask; mkstemp's
  0600 hid results from the rest of a group), and an existing file its own.

On the reading side, :func:`check_regular_file` and :func:`open_regular` refuse
anything but a regular file before opening it (a FIFO's open waits for a
writer forever), and :func:`check_npz` checks an archive before ``np.load``
allocates what its members declare.
"""

from __future__ import annotations

import errno
import math
import os
import stat
import uuid
import zipfile
from collections.abc import Callable, Collection, Mapping
from typing import IO, BinaryIO

import numpy as np

from ._signals import signals_interrupt

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
    exists = os.path.lexists(target)
    if exists and not stat.S_ISREG(os.stat(target).st_mode):
        raise ValueError(
            f"{what} {path!r} exists and is not a regular file; refusing to replace it"
        )
    if not os.path.isdir(folder):
        raise OSError(f"cannot write {what} {path!r}: the folder {folder!r} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OSError(f"cannot write {what} {path!r}: the folder {folder!r} is not writable")
    # The rename needs only the folder's permission, so a file the user may not
    # write (chmod 444, another's file in a shared folder) would be replaced where
    # open() refuses; access() asks as open() would, ACLs and root included
    # (tests/test_model.py::test_save_refuses_a_file_open_would_refuse).
    if exists and not os.access(target, os.W_OK):
        raise PermissionError(
            errno.EACCES, f"cannot write {what} {path!r}: permission denied", path
        )
    return target


def check_regular_file(path: str | os.PathLike, what: str) -> str:
    """``path`` as a str if it names a regular file (through symlinks), without opening it.

    Raises FileNotFoundError (an OSError) if nothing is there, and ValueError
    for anything else: a FIFO, whose open blocks until a writer comes; a
    device or a socket; a folder.
    """
    path = os.fspath(path)
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise ValueError(f"{what} {path!r} is not a regular file (it is {_kind(mode)})")
    return path


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a file"


def open_regular(path: str | os.PathLike, what: str) -> BinaryIO:
    """``open(path, "rb")`` for a regular file only (see :func:`check_regular_file`).

    Checked before opening, and again on the open file, opened without
    blocking: what stands at ``path`` may be swapped for a FIFO in between.
    """
    path = check_regular_file(path, what)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ValueError(f"{what} {path!r} is not a regular file (it is {_kind(mode)})")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def replace_file(
    path: str | os.PathLike, write: Callable[[IO[bytes]], object], what: str = "file"
) -> None:
    """``write(fh)`` into a binary temporary file, flushed to disk, moved to ``path`` atomically."""

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
    an existing file's mode is kept.

    SIGTERM and SIGHUP, whose default ends the process where it stands, raise
    within (:func:`fastspiral._signals.signals_interrupt`), so the temporary file
    is removed before the process ends
    (tests/test_model.py::test_sigterm_during_save_leaves_no_temporary_file).
    """
    target = check_writable_path(path, what)
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = None
    folder, name = os.path.split(target)
    stem, suffix = os.path.splitext(name)
    tmp = os.path.join(folder, f".{stem}.{uuid.uuid4().hex[:12]}.tmp{suffix}")
    with signals_interrupt():
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
    path: str | os.PathLike | BinaryIO,
    names: Collection[str] | None = None,
    max_bytes: Mapping[str, int] | None = None,
) -> None:
    """Refuse an .npz archive whose arrays would need more memory than the file accounts for.

    Each member must be an .npy array whose declared shape and dtype account
    for its bytes exactly, none may be compressed far below its size, none may
    appear twice, and (when given) only ``names`` may appear, each within
    ``max_bytes``. Otherwise a small file could make ``np.load`` allocate
    gigabytes before failing (tests/test_model.py::test_load_refuses_damaged_and_hostile_files).
    ``path`` may be an open binary file. Raises ValueError (or OSError,
    zipfile.BadZipFile) without naming the path.
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
