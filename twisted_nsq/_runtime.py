"""Process-wide tuning a daemon applies at start-up (never done by library code)."""

from __future__ import annotations

import ctypes
import gc
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

#: Generation-0 threshold. nsqd allocates one small object per message and channel; CPython's
#: default (700) runs a young collection every few hundred messages, which measured as half of
#: the MPUB path's time with a million messages held. Messages form no reference cycles, so
#: rarer collections cost nothing in memory; cycles elsewhere (Failures, Deferreds) are still
#: collected.
GC_THRESHOLDS = (100_000, 50, 100)

#: The standard library's OpenSSL bindings: C{ssl}/C{_ssl}, and C{_hashlib} (C{hashlib} then uses
#: CPython's built-in digests). Twisted's TLS is pyOpenSSL's, so the daemons never use these,
#: and everything that imports them (asyncio, http.client, urllib.request, hmac, werkzeug)
#: treats them as optional. They cost an idle nsqd about 4.5 MiB (docs/performance.md).
STDLIB_TLS_MODULES = ("ssl", "_ssl", "_hashlib")
#: What an nsqd without TLS options never needs: the above and pyOpenSSL, with cryptography under
#: it (about 12 MiB), which Twisted's TCP transport and endpoints import only if they can.
TLS_MODULES = ("OpenSSL", *STDLIB_TLS_MODULES)


def tune_gc() -> None:
    """
    Apply ``GC_THRESHOLDS``, freeze what start-up allocated (imports, options), and hand the
    C heap's free pages back to the system (glibc only) so an idle daemon's RSS is what it uses.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    release_free_memory()


def release_free_memory() -> None:
    """C{malloc_trim(0)} where the C library has it (glibc); nothing elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    # The process's own symbols include the C library's; find_library would run ldconfig.
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim(0)


#: The standard-library modules that leave out their HTTPS part when imported without C{ssl}, with
#: the name that part defines. Twisted imports both at start-up (through C{http.cookiejar}).
_HTTPS_PARTS = (("http.client", "HTTPSConnection"), ("urllib.request", "HTTPSHandler"))


def restore_stdlib_tls() -> None:
    """
    Re-run the standard-library modules that were imported while C{ssl} was hidden
    (L{modules_hidden}), so that they define their HTTPS parts now that C{ssl} imports. Call it
    before importing a library that needs them (prometheus_client's exposition imports
    C{urllib.request.HTTPSHandler}); it does nothing when they are complete.
    """
    import importlib

    for name, part in _HTTPS_PARTS:
        module = sys.modules.get(name)
        if module is not None and not hasattr(module, part):
            importlib.reload(module)


@contextmanager
def modules_hidden(names: Iterable[str]) -> Iterator[None]:
    """
    While the block runs, make C{import NAME} raise C{ImportError} for each of C{names} not
    imported yet. A module that tries to import one of them inside the block takes the path it
    has for its absence, and keeps it: use this only around imports whose users never need them
    (a daemon's start, before anything else is imported). Afterwards the names import normally.
    """
    hidden = [name for name in names if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
