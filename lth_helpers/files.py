"""One way to write a file, one way to read one, and one way to lock a folder: for the run folder (runs.py) and the
sweep folder (sweep.py) alike.

`write_atomic` writes to a temporary name in the same folder, syncs it to the disk and renames it into place, so a file
is whole or absent after a kill or a power cut alike; a failed write (a full disk, no permission) removes its temporary
file and raises a WriteError naming the file. `read_checked` turns whatever goes wrong while reading (missing, cut
short, garbage, wrong content) into a DamagedFileError naming the file and the remedy, and changes nothing.
`lock_folder` keeps a second process out of a folder for as long as the first lives. `inside` refuses a symbolic link
on the way to a file, and `remove_together` removes files all together or not at all.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

try:
    import fcntl  # POSIX: the lock that keeps two runs out of one folder
except ImportError:  # Windows: folders are not locked
    fcntl = None

T = TypeVar("T")
CLEARING = ".overwritten"  # remove_together moves the files here, then deletes it


class RunFolderError(RuntimeError):
    """The run folder cannot be used: another config or another run holds it, a file is damaged, a write failed.
    The message is one line and says what to do."""


class DamagedFileError(RunFolderError):
    """A file of the folder cannot be read back; the folder is left as it was."""


class WriteError(RunFolderError):
    """A file could not be written (a full disk, no permission); its old version, if any, is intact."""

    def __init__(self, message: str, file: Path, reason: str):
        super().__init__(message)
        self.file, self.reason = file, reason


def write_atomic(file: Path, write: Callable[[Path], None]) -> None:
    """Write `file` whole or not at all: `write(tmp)` fills a temporary file beside it, which is synced to the disk
    before it is renamed into place; the folder is synced after the rename, so that the rename lasts too.

    A reader, a run killed meanwhile, or a power cut sees the old file or the new one, never half of one. Any OSError
    (a full disk, no permission) removes the temporary file and becomes a WriteError that names the file.
    """
    file = Path(file)
    tmp = file.with_name(file.name + ".tmp")
    try:
        tmp.unlink(missing_ok=True)  # left by a killed write, or a link: never written through
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, file)
        _sync_folder(file.parent)
    except BaseException as error:  # a full disk, or Ctrl-C: no temporary file is left behind
        tmp.unlink(missing_ok=True)
        if not isinstance(error, OSError):
            raise
        raise WriteError(f"could not write {file}: {reason(error)}", file, reason(error)) from None


def _sync_folder(folder: Path) -> None:
    """Make the renames in `folder` last through a power cut. Windows cannot open a folder, and some file systems
    (network and FUSE mounts) cannot sync one: there, a rename lasts as the system makes it."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    finally:
        os.close(handle)


def read_checked(file: Path, parse: Callable[[Path], T]) -> T:
    """`parse(file)`, with any failure (missing, cut short, garbage, wrong content) a DamagedFileError naming
    `file`: a folder damaged by a failed copy or sync, an edit, a deletion."""
    try:
        return parse(file)
    except RunFolderError:
        raise
    except Exception as error:
        raise DamagedFileError(
            f"{file} cannot be read ({type(error).__name__}: {reason(error)}); the run folder is damaged: "
            f"restore that file, start the run again with --overwrite (in Python: overwrite=True), or choose "
            f"another folder"
        ) from None


def reason(error: BaseException) -> str:
    """The first sentence of an error's message, on one line (torch's explanations run to several sentences)."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return " ".join(str(error).split()).split(". ")[0] or type(error).__name__


def lock_folder(folder: Path, lock_file: Path) -> int | None:
    """Lock `folder` for this process with an OS lock (flock) on the folder itself, or on `lock_file` where the file
    system cannot lock a folder (NFS); returns the descriptor that holds it (closing it drops the lock, as does the end
    of the process, however it ends), or None where nothing can be locked (Windows, a file system without locks, a
    folder this process cannot write to). Raises BlockingIOError when another process holds the lock."""
    if fcntl is None:
        return None
    for target, flags in ((folder, os.O_RDONLY), (lock_file, os.O_WRONLY | os.O_CREAT)):
        try:
            handle = os.open(target, flags, 0o666)
        except OSError:
            continue
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            raise
        except OSError:  # this file system cannot lock it
            os.close(handle)
            continue
        return handle
    return None


def inside(folder: Path, name: str) -> Path:
    """The path of the file `name` (relative to `folder`), refused with a RunFolderError where a symbolic link stands
    on the way to it inside the folder: the tool reads, writes and removes files only inside its folders."""
    path = Path(folder)
    for part in Path(name).parts:
        path = path / part
        if path.is_symlink():
            raise RunFolderError(
                f"{path} is a symbolic link (to {os.readlink(path)}); a run reads, writes and removes files only "
                f"inside its folder, never through a link: put what it points to in its place, or choose another folder"
            )
    return path


def remove_together(folder: Path, names: list[str]) -> None:
    """Remove the files `names` (relative to `folder`, in that order), all of them or, if one cannot be moved, none.

    The files are first moved into a side folder, CLEARING (renames in one folder: no data is copied), then the side
    folder is deleted; a failure while moving (or a Ctrl-C) moves them back and raises a RunFolderError saying nothing
    was removed. A link named like the side folder is removed as a link, never its target.
    """
    side, moved = Path(folder) / CLEARING, []
    try:
        if side.is_symlink() or (side.exists() and not side.is_dir()):
            side.unlink()
        shutil.rmtree(side, ignore_errors=True)  # left by a clear whose deletion was cut short
        os.mkdir(side)
        for name in names:
            os.replace(inside(folder, name), side / str(len(moved)))
            moved.append(name)
    except BaseException as error:  # an OSError, or Ctrl-C: every file goes back
        for i, name in reversed(list(enumerate(moved))):
            os.replace(side / str(i), Path(folder) / name)
        if side.is_dir() and not side.is_symlink():
            side.rmdir()
        if not isinstance(error, OSError):
            raise
        raise RunFolderError(
            f"{folder} could not be cleared: {reason(error)}; nothing was removed; fix that, or choose another folder"
        ) from None
    shutil.rmtree(side, ignore_errors=True)


def check_place(path: Path) -> None:
    """Raise RunFolderError where a file stands at `path` or above it: a run needs a folder."""
    nearest = next(p for p in (path, *path.parents) if p.exists())
    if not nearest.is_dir():
        where = f"{path} is a file" if nearest == path else f"{nearest} is a file, so {path} cannot be made"
        raise RunFolderError(f"{where}: a run needs a folder; choose another")
