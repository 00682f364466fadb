"""Writing a whole folder so that readers only ever see the old one or the new one, complete.

    with replace_folder(Path("my-adapter"), marker="image_lm.json") as staging:
        ...write every file into staging...
    # now my-adapter is the new folder; the old one (if any) is gone

The new content is written into a temporary folder beside the target (same file system), then put
in place by one ``renameat2(RENAME_EXCHANGE)`` where the OS offers it (Linux: the swap is atomic, a
reader never finds the folder missing), else by two renames (the folder is absent for an instant,
never half-written). A crash or an exception leaves the target as it was and no temporary folder.

With ``durable=True`` (training checkpoints) every file and the staging folder are fsynced before the
swap and the parent folder after it, so that a power cut cannot leave a renamed but empty folder.

Saving never deletes what it did not write: an existing target is replaced only when it is empty or
holds ``marker`` (a file only this kind of folder has); any other folder is refused with
``FileExistsError`` naming what is in it. Two processes saving the same target at once both succeed;
the last swap wins.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

from .checkpoint import default_mode

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _libc():
    name = ctypes.util.find_library("c")
    try:
        lib = ctypes.CDLL(name, use_errno=True)
        lib.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        return lib
    except (OSError, AttributeError):  # not glibc >= 2.28, or not Linux
        return None


_LIBC = _libc()


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically; False when the OS or file system cannot (nothing changed)."""
    if _LIBC is None:
        return False
    if _LIBC.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(code, os.strerror(code), str(b))


def fsync_folder(path: Path) -> None:
    """fsync a folder's entry list (after creating or renaming what it holds)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*"), reverse=True):  # children before their folders
        if path.is_dir():
            fsync_folder(path)
        else:
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    fsync_folder(root)


def check_replaceable(target: Path, marker: str) -> None:
    """``FileExistsError`` unless ``target`` is absent, an empty folder, or a folder holding ``marker``."""
    if not target.exists() and not target.is_symlink():
        return
    here = Path.cwd().resolve()
    if target.resolve() == here or target.resolve() in here.parents:
        raise FileExistsError(f"{target} is the current directory (or holds it); replacing it would pull the "
                              "ground from under this process. Save into a subfolder")
    if not target.is_dir() or target.is_symlink():
        raise FileExistsError(f"{target} exists and is not a folder; choose another place to save")
    contents = sorted(p.name for p in target.iterdir())
    if contents and marker not in contents:
        shown = ", ".join(contents[:5]) + (", ..." if len(contents) > 5 else "")
        raise FileExistsError(f"{target} already holds other files ({shown}) and no {marker}: saving would delete "
                              "them. Save into a new or empty folder (e.g. a subfolder)")


def _put_in_place(staging: Path, target: Path) -> None:
    if target.exists() and exchange(staging, target):
        shutil.rmtree(staging)  # now the old content
        return
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(target, old)
        except FileNotFoundError:  # another process moved it first
            old = None
        try:
            os.rename(staging, target)
        except OSError:
            if old is not None and not target.exists():
                os.rename(old, target)  # put the old folder back rather than lose both
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return
    try:
        os.rename(staging, target)
    except OSError as err:
        if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        _put_in_place(staging, target)  # another process created it meanwhile: replace theirs


@contextlib.contextmanager
def replace_folder(target: str | os.PathLike, *, marker: str, durable: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder; on normal exit it becomes ``target`` (see the module docstring).

    Args:
        target: the folder to write (created with its parents if needed).
        marker: a file name that marks a folder of this kind (it must be written into the staging
            folder, and an existing target is replaced only if empty or holding it).
        durable: fsync the written files and folders before the swap and the parent after it.
    """
    target = Path(target).expanduser().absolute()
    check_replaceable(target, marker)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield staging
        if not (staging / marker).is_file():
            raise RuntimeError(f"the folder written for {target} lacks its {marker}")
        for path in [staging, *staging.rglob("*")]:  # mkdtemp and some writers use 0700/0600
            os.chmod(path, default_mode(directory=path.is_dir()))
        if durable:
            _fsync_tree(staging)
        check_replaceable(target, marker)  # again: something may have appeared while writing
        _put_in_place(staging, target)
        if durable:
            fsync_folder(target.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
