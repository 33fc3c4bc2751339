"""Go's ``%q`` string quoting and ``time.Duration`` text, which NSQ shows to clients and operators."""

from __future__ import annotations

_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}


def go_quote(value: bytes | str) -> str:
    """Quote like Go's ``%q``: printable runes kept, invalid UTF-8 bytes as ``\\xNN``."""
    text = value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value
    out = ['"']
    for char in text:
        code = ord(char)
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif char.isprintable():
            out.append(char)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def go_bytes(value: bytes) -> str:
    """A byte string as Go's ``%s`` prints it (raw bytes; invalid UTF-8 kept as is)."""
    return value.decode("utf-8", "replace")


def go_duration(ns: int) -> str:
    """A duration in nanoseconds as Go's C{time.Duration.String()} prints it (C{1.5µs}, C{7m14s})."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    u = -ns if ns < 0 else ns
    if u < 1_000_000_000:
        if u < 1_000:
            return f"{sign}{u}ns"
        unit, digits = ("µs", 3) if u < 1_000_000 else ("ms", 6)
        whole, frac = divmod(u, 10**digits)
        return f"{sign}{whole}{_fraction(frac, digits)}{unit}"
    seconds, frac = divmod(u, 1_000_000_000)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs}{_fraction(frac, 9)}s"
    if seconds >= 60:
        text = f"{minutes}m{text}"
    if hours:
        text = f"{hours}h{text}"
    return sign + text


def _fraction(frac: int, digits: int) -> str:
    if not frac:
        return ""
    return "." + str(frac).rjust(digits, "0").rstrip("0")
