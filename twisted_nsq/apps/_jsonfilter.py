"""
C{nsq_to_nsq}'s JSON filtering (C{--require-json-field}, C{--require-json-value},
C{--whitelist-json-field}), with the outcomes of Go's:

- A body that is not JSON is dropped (finished, not forwarded), with an error logged.
- Without the required field the message is dropped; but when a value is also required, it is
  requeued (with backoff) and an error logged.
- With the field, a required value matches a JSON string equal to it, or a JSON number equal to it
  when it parses as a number; anything else is dropped.
- With a whitelist, the body is rewritten as a JSON object holding only the whitelisted fields that
  are present, keys sorted, numbers exactly as written, strings escaped as Go's C{encoding/json}
  does; a body that is not a JSON object is requeued.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import attrs

from twisted_nsq._cli import parse_go_float

__all__ = ["Verdict", "encode_go_json", "filter_message"]


class _Number:
    """A JSON number kept as its literal text (Go's C{json.Number}, which simplejson decodes to)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _refuse_constant(name: str) -> object:
    # NaN and Infinity are Python extensions; Go's decoder refuses them.
    raise ValueError(f"invalid JSON literal {name}")


def _decode(body: bytes) -> object:
    text = body.decode("utf-8", errors="replace")
    return json.loads(text, parse_int=_Number, parse_float=_Number, parse_constant=_refuse_constant)


@attrs.frozen
class Verdict:
    """
    What to do with one message.

    @ivar body: the body to forward, or C{None} to forward nothing.
    @ivar requeue: whether to requeue (with backoff) instead of finishing, when nothing is forwarded.
    @ivar error: a line to log, if any.
    """

    body: bytes | None
    requeue: bool = False
    error: str | None = None


_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


def _encode_string(text: str, out: list[str]) -> None:
    out.append('"')
    for char in text:
        escaped = _ESCAPES.get(char)
        if escaped is not None:
            out.append(escaped)
        elif char < " ":
            out.append(f"\\u{ord(char):04x}")
        elif "\ud800" <= char <= "\udfff":
            # A lone surrogate (from a \\ud800-style escape) is not UTF-8: Go writes U+FFFD.
            out.append("\ufffd")
        else:
            out.append(char)
    out.append('"')


def _encode(value: object, out: list[str]) -> None:
    if isinstance(value, _Number):
        out.append(value.text)
    elif isinstance(value, str):
        _encode_string(value, out)
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif value is None:
        out.append("null")
    elif isinstance(value, dict):
        out.append("{")
        for index, key in enumerate(sorted(value)):
            if index:
                out.append(",")
            _encode_string(key, out)
            out.append(":")
            _encode(value[key], out)
        out.append("}")
    elif isinstance(value, list):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _encode(item, out)
        out.append("]")
    else:
        raise TypeError(f"cannot encode {value!r}")


def encode_go_json(value: object) -> bytes:
    """A decoded JSON value written back the way Go's C{json.Marshal} writes it."""
    out: list[str] = []
    _encode(value, out)
    return "".join(out).encode("utf-8")


def _value_matches(value: object, required: str) -> bool:
    if isinstance(value, str):
        return value == required
    if isinstance(value, _Number):
        try:
            return parse_go_float(required) == float(value.text)
        except ValueError:
            return False
    return False


def filter_message(body: bytes, require_field: str, require_value: str, whitelist: Sequence[str]) -> Verdict:
    """Apply C{nsq_to_nsq}'s JSON options to one message body."""
    if not require_field and not whitelist:
        return Verdict(body)
    try:
        document = _decode(body)
    except ValueError:
        return Verdict(None, error=f"ERROR: Unable to decode json: {body.decode('utf-8', 'replace')}")
    if require_field:
        if not isinstance(document, dict) or require_field not in document:
            if require_value:
                return Verdict(None, requeue=True, error="ERROR: missing field to check required value")
            return Verdict(None)
        if require_value and not _value_matches(document[require_field], require_value):
            return Verdict(None)
    if not whitelist:
        return Verdict(body)
    if not isinstance(document, dict):
        return Verdict(None, requeue=True, error="ERROR: filterMessage() failed: json is not an object")
    kept = {key: document[key] for key in whitelist if key in document}
    return Verdict(encode_go_json(kept))
