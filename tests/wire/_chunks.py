"""Helpers that cut a byte stream into the pieces a transport might deliver."""

from __future__ import annotations

from hypothesis import strategies as st


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    """Cut C{data} at the given offsets (clamped, deduplicated, any order)."""
    points = sorted({min(max(cut, 0), len(data)) for cut in cuts})
    chunks = []
    previous = 0
    for point in points:
        chunks.append(data[previous:point])
        previous = point
    chunks.append(data[previous:])
    return chunks


def byte_by_byte(data: bytes) -> list[bytes]:
    """One chunk per byte."""
    return [data[index : index + 1] for index in range(len(data))]


def cut_points(length: int) -> st.SearchStrategy[list[int]]:
    """Up to 20 offsets into a stream of C{length} bytes."""
    return st.lists(st.integers(min_value=0, max_value=length), max_size=20)
