"""
Durable file replacement shared by nsqd's on-disk state: the disk queues' metadata, C{nsqd.dat}
and the ordered channels' head files.
"""

from __future__ import annotations

import os


def replace_file(path: str, data: bytes) -> None:
    """
    Replace C{path} with C{data} so that a crash leaves either the old or the new file: write a
    C{<path>.<random>.tmp} file (mode 0600), fsync it, rename it over C{path}. The new name is
    durable only after L{fsync_directory}. Raises OSError; the temporary file is removed on failure.
    """
    tmp = f"{path}.{int.from_bytes(os.urandom(8), 'big') >> 1}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def fsync_directory(path: str) -> None:
    """Make the names in a directory (created, renamed, deleted files) durable."""
    dir_fd = os.open(path or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
