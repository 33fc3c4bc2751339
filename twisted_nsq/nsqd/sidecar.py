"""
The deferral sidecar: due times of deferred messages that were written to a queue's files.

Go nsqd writes deferred messages into the channel's disk queue at shutdown and forgets when
they were due (nsqio/nsq#1107). With ``--keep-deferred`` (and always in ``--durable`` mode) we
also record ``(message ID, due time)`` pairs in ``<queue>.diskqueue.deferred.dat``, a file Go
nsqd never reads, so the queue files themselves stay exactly Go's. When such a message is read
back from the queue before it is due, it waits out the rest of its deferral.

Format: a sequence of 24-byte records, a 16-byte message ID then the due time as a big-endian
int64 of nanoseconds since the Unix epoch (wall clock, so it survives a restart).
"""

from __future__ import annotations

import os
import struct

_RECORD = struct.Struct(">16sq")


def sidecar_path(data_path: str, queue_name: str) -> str:
    return os.path.join(data_path, f"{queue_name}.diskqueue.deferred.dat")


def save_deferrals(path: str, deferrals: dict[bytes, int]) -> None:
    """Write ``{id: due_ns}`` atomically (tmp file, fsync, rename); remove the file when empty."""
    if not deferrals:
        if os.path.exists(path):
            os.remove(path)
        return
    data = b"".join(_RECORD.pack(message_id, due) for message_id, due in deferrals.items())
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def load_deferrals(path: str) -> dict[bytes, int]:
    """Read the sidecar (missing: empty); a torn last record is ignored."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return {}
    usable = len(data) - len(data) % _RECORD.size
    return {message_id: due for message_id, due in _RECORD.iter_unpack(data[:usable])}
