"""Topic and channel name rules, shared by nsqd (TCP and HTTP), nsqlookupd and nsqadmin."""

from __future__ import annotations

import re

MAX_NAME_LENGTH = 64
EPHEMERAL_SUFFIX = "#ephemeral"

# fullmatch() is used because Python's "$" would also accept a trailing newline, Go's does not.
_NAME = re.compile(r"[.a-zA-Z0-9_-]+(?:#ephemeral)?")


def _is_valid_name(name: str) -> bool:
    return 1 <= len(name) <= MAX_NAME_LENGTH and _NAME.fullmatch(name) is not None


def is_valid_topic_name(name: str) -> bool:
    """
    Whether C{name} is an acceptable topic name.

    1 to 64 characters from C{[.a-zA-Z0-9_-]}, optionally ending in C{#ephemeral} (the suffix counts
    toward the 64).
    """
    return _is_valid_name(name)


def is_valid_channel_name(name: str) -> bool:
    """Whether C{name} is an acceptable channel name (the same rule as topic names)."""
    return _is_valid_name(name)


def is_ephemeral(name: str) -> bool:
    """Whether a topic or channel name asks for an ephemeral (memory-only, auto-deleted) one."""
    return name.endswith(EPHEMERAL_SUFFIX)
