"""What the operating system says about a scan path, before anything opens it.

A manifest row can name anything: a symlink that loops, a FIFO or a device named ``.dcm`` (open
one and the read blocks or never ends), a file this user may not read, or one that vanished since
the manifest was written. ``check_scan_path`` looks with ``os.stat`` alone (which never blocks) and
turns each case into that scan's plain reason; ``os_reason`` does the same for an ``OSError``
raised later, mid-read (a file deleted or a share gone while it was being read).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from medtl.errors import ScanError

# st_mode file types that are not files or folders, in words
_SPECIAL = {
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}

_ERRNO = {
    errno.ENOENT: "file not found",
    errno.ENOTDIR: "file not found (a part of the path is not a folder)",
    errno.EACCES: "permission denied (this user may not read it)",
    errno.EPERM: "permission denied (this user may not read it)",
    errno.ELOOP: "symlink loop (the link leads back to itself)",
    errno.ENAMETOOLONG: "path too long for this system",
    errno.EISDIR: "a folder where a file was expected",
    errno.EIO: "input/output error while reading (failing disk or network share)",
    errno.ENXIO: "no such device (a device or socket that cannot be read)",
    errno.ENODEV: "no such device (a device or socket that cannot be read)",
    errno.ESTALE: "stale file handle (the network share changed while reading)",
}


def os_reason(e: OSError) -> str:
    """A plain reason for an operating-system error, without the path or text it quotes."""
    if e.errno in _ERRNO:
        return _ERRNO[e.errno]
    return f"cannot be read ({os.strerror(e.errno) if e.errno else type(e).__name__})"


def check_scan_path(path: str | os.PathLike[str], subject: object | None = None) -> None:
    """Raise a ``ScanError`` unless ``path`` is a regular file or a folder this process can read.

    Only ``stat`` calls: nothing is opened, so a FIFO or a device cannot block or flood the read.
    ``subject`` names the scan in the error (default: ``path`` as given, never a symlink's target).
    """
    p = Path(path)
    who = p if subject is None else subject
    try:
        st = os.stat(p)  # follows symlinks: ELOOP for a loop, ENOENT for a link to nothing
    except OSError as e:
        if e.errno == errno.ENOENT and os.path.islink(p):
            raise ScanError(who, "broken symlink (its target does not exist)") from None
        raise ScanError(who, os_reason(e)) from None
    kind = stat.S_IFMT(st.st_mode)
    if kind in _SPECIAL:
        raise ScanError(who, f"not a regular file but {_SPECIAL[kind]}; medtl reads files and folders only")
    if not os.access(p, os.R_OK | (os.X_OK if kind == stat.S_IFDIR else 0)):
        raise ScanError(who, os_reason(PermissionError(errno.EACCES, "")))
