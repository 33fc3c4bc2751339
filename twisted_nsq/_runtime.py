"""Process-wide tuning a daemon applies at start-up (never done by library code)."""

from __future__ import annotations

import gc

#: Generation-0 threshold. nsqd allocates one small object per message and channel; CPython's
#: default (700) runs a young collection every few hundred messages, which measured as half of
#: the MPUB path's time with a million messages held. Messages form no reference cycles, so
#: rarer collections cost nothing in memory; cycles elsewhere (Failures, Deferreds) are still
#: collected.
GC_THRESHOLDS = (100_000, 50, 100)


def tune_gc() -> None:
    """Apply ``GC_THRESHOLDS`` and freeze what start-up allocated (imports, options)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
