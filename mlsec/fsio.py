"""Opening files that are meant to be regular files, without ever blocking.

Discovery skips FIFOs and devices, but a path can be swapped for one between the walk and a
scanner's ``open()`` (or a neighbouring README can be a FIFO from the start): a plain blocking
``open()`` of a FIFO waits for a writer forever, and ``/dev/zero`` never ends. Every open of a
scanned or neighbouring file goes through :func:`open_regular`, which opens without blocking,
checks the opened descriptor (not the path: no race) and refuses anything but a regular file.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO


class NotRegularFile(OSError):
    """The path is (now) a FIFO, device, socket or directory: not read."""


def open_regular(path: str | os.PathLike[str], buffering: int = -1) -> BinaryIO:
    """Open ``path`` for binary reading if, once opened, it is a regular file."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "FIFO" if stat.S_ISFIFO(mode) else "directory" if stat.S_ISDIR(mode) else "device or special file"
            raise NotRegularFile(errno.EINVAL, f"not a regular file ({kind})", os.fspath(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=buffering)
    except BaseException:
        os.close(fd)
        raise
