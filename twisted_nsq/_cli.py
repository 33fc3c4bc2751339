"""
Go C{flag}-package command lines and C{--config} TOML files, shared by every console script.

NSQ's harnesses and users start the daemons with Go's flag syntax (C{-f v}, C{-f=v}, C{--f v},
C{--f=v}, bare booleans), so a script describes its flags once as a table of L{FlagSpec} and
L{resolve} turns an argument list into one value per flag: command line over config file over
defaults. Durations are Go durations on the command line (C{"1m30s"}) and float seconds in Python.
"""

from __future__ import annotations

import enum
import platform
import re
import signal
import tomllib
from collections.abc import Callable, Iterable, Sequence
from fractions import Fraction
from types import FrameType
from typing import TextIO

import attrs
from twisted.internet.error import ReactorNotRunning
from twisted.internet.interfaces import IReactorCore
from twisted.logger import Logger

from twisted_nsq._gofmt import go_duration
from twisted_nsq._version import VERSION_STRING

_log = Logger()


class Kind(enum.Enum):
    """How a flag's text becomes a value."""

    STRING = "string"
    INT = "int"
    FLOAT = "float"
    DURATION = "duration"
    BOOL = "bool"
    #: Repeatable; every occurrence appends one string.
    STRING_LIST = "string list"
    #: Repeatable; every occurrence appends one or more comma-separated floats.
    FLOAT_LIST = "float list"
    #: A boolean-style flag (bare means C{"true"}) that also takes the words in C{choices};
    #: the value is the string C{"true"}, C{"false"} or one of the choices.
    BOOL_OR_CHOICE = "bool or choice"


# The placeholder Go's usage output shows after a flag name.
_PLACEHOLDERS = {
    Kind.STRING: "string",
    Kind.INT: "int",
    Kind.FLOAT: "float",
    Kind.DURATION: "duration",
    Kind.BOOL: "",
    Kind.STRING_LIST: "value",
    Kind.FLOAT_LIST: "value",
    Kind.BOOL_OR_CHOICE: "",
}
_BOOLEAN_KINDS = frozenset({Kind.BOOL, Kind.BOOL_OR_CHOICE})
_LIST_KINDS = frozenset({Kind.STRING_LIST, Kind.FLOAT_LIST})

#: Names every table must define: they steer L{resolve} instead of becoming settings.
CONFIG_FLAG = "config"
VERSION_FLAG = "version"


@attrs.frozen
class FlagSpec:
    """
    One command-line flag.

    @ivar name: the flag without dashes, e.g. C{"tcp-address"}.
    @ivar kind: how its text is parsed.
    @ivar default: the value when neither the command line nor the config file set it.
    @ivar help: one line for the usage text.
    @ivar attr: the key in L{resolve}'s result; C{name} with C{-} replaced by C{_} when empty.
    @ivar config_key: the TOML key; C{attr} when empty.
    @ivar in_config: whether the config file may set it at all.
    @ivar choices: for strings, the accepted values (compared lower-cased, stored lower-cased);
        for L{Kind.BOOL_OR_CHOICE}, the accepted words besides the booleans.
    """

    name: str
    kind: Kind
    default: object
    help: str
    attr: str = ""
    config_key: str = ""
    in_config: bool = True
    choices: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """The key of this flag's value in L{resolve}'s result."""
        return self.attr or self.name.replace("-", "_")

    @property
    def toml_key(self) -> str:
        """The key that sets this flag in a C{--config} file."""
        return self.config_key or self.key

    def initial(self) -> object:
        """A fresh copy of the default (lists are never shared between parses)."""
        if isinstance(self.default, list | tuple):
            return list(self.default)
        return self.default


class FlagError(Exception):
    """The command line is wrong; C{str()} is Go's one-line message (exit status 2)."""


class ConfigError(Exception):
    """The C{--config} file cannot be read or holds a bad value (Go exits 1 for these)."""


class HelpRequested(Exception):
    """C{-h}, C{-help} or C{--help} was given."""


class VersionRequested(Exception):
    """C{--version} was given (and the rest of the command line was valid)."""


class _BadValue(ValueError):
    """A flag's text does not parse; C{str()} is the reason Go appends after the colon."""


# ---------------------------------------------------------------------------------------------
# Go value syntax


_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1


def parse_go_bool(text: str) -> bool:
    """Parse a boolean the way Go's C{strconv.ParseBool} does."""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _BadValue("parse error")


def parse_go_int(text: str) -> int:
    """
    Parse a 64-bit integer the way Go's C{strconv.ParseInt(s, 0, 64)} does: an optional sign, then
    decimal, C{0x} hex, C{0o} or leading-C{0} octal, or C{0b} binary, with C{_} between digits.
    """
    body = text
    negative = False
    if body[:1] in ("+", "-"):
        negative = body[0] == "-"
        body = body[1:]
    if not body or body[0] in "+-_" or body != body.strip():
        raise _BadValue("parse error")
    if len(body) > 1 and body[0] == "0" and body[1] not in "xXoObB":
        # Go reads a leading zero as octal; Python only accepts the 0o spelling.
        body = "0o" + body[1:]
    try:
        value = int(body, 0)
    except ValueError:
        raise _BadValue("parse error") from None
    if negative:
        value = -value
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise _BadValue("value out of range")
    return value


def parse_go_float(text: str) -> float:
    """Parse a float the way Go's C{strconv.ParseFloat} does (decimal, hex, C{inf}, C{nan})."""
    if not text or text != text.strip() or "_" in text:
        raise _BadValue("parse error")
    unsigned = text.lstrip("+-")
    try:
        if unsigned[:2].lower() == "0x":
            return float.fromhex(text)
        return float(text)
    except ValueError:
        raise _BadValue("parse error") from None


_DURATION_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign
    "\u03bcs": 1_000,  # Greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}
_DURATION_PART = re.compile(r"(\d*)(?:\.(\d*))?([^\d.]*)")


def parse_go_duration_ns(text: str) -> int:
    """
    Parse a Go duration (C{"250ms"}, C{"1m30s"}, C{"1.5h"}, C{"-2s"}, C{"0"}) into nanoseconds,
    truncating the way C{time.ParseDuration} does. A bare number other than C{0} has no unit and
    is refused, as in Go.
    """
    body = text
    negative = False
    if body[:1] in ("+", "-"):
        negative = body[0] == "-"
        body = body[1:]
    if body == "0":
        return 0
    if not body:
        raise _BadValue("parse error")
    total = 0
    position = 0
    while position < len(body):
        match = _DURATION_PART.match(body, position)
        if match is None or match.end() == position:
            raise _BadValue("parse error")
        whole, fraction, unit = match.groups()
        fraction = fraction or ""
        if not whole and not fraction:
            raise _BadValue("parse error")
        scale = _DURATION_UNITS_NS.get(unit)
        if scale is None:
            raise _BadValue("parse error")
        amount = Fraction(int(whole or "0")) + (
            Fraction(int(fraction), 10 ** len(fraction)) if fraction else Fraction(0)
        )
        total += int(amount * scale)
        position = match.end()
    if total > _INT64_MAX:
        raise _BadValue("parse error")
    return -total if negative else total


def parse_go_duration(text: str) -> float:
    """Parse a Go duration into float seconds."""
    return parse_go_duration_ns(text) / 1e9


def format_go_duration(seconds: float) -> str:
    """Write float seconds the way Go's C{Duration.String} does: C{"1m0s"}, C{"250ms"}, C{"1h0m0s"}."""
    return go_duration(round(seconds * 1e9))


def _format_float(value: float) -> str:
    # Go's %v drops a zero fraction: 1 rather than 1.0.
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


# ---------------------------------------------------------------------------------------------
# The command line


def _set_from_text(spec: FlagSpec, text: str, current: object) -> object:
    """Return the flag's new value after one occurrence with C{text}."""
    kind = spec.kind
    if kind is Kind.STRING:
        if spec.choices:
            lowered = text.lower()
            if lowered not in spec.choices:
                raise _BadValue(f"unknown value {text!r} (expected one of: {', '.join(spec.choices)})")
            return lowered
        return text
    if kind is Kind.INT:
        return parse_go_int(text)
    if kind is Kind.FLOAT:
        return parse_go_float(text)
    if kind is Kind.DURATION:
        return parse_go_duration(text)
    if kind is Kind.BOOL:
        return parse_go_bool(text)
    if kind is Kind.BOOL_OR_CHOICE:
        if text.lower() in spec.choices:
            return text.lower()
        return "true" if parse_go_bool(text.lower()) else "false"
    assert isinstance(current, list)
    if kind is Kind.STRING_LIST:
        return [*current, text]
    # Go's float-array flag keeps its list sorted from largest to smallest after every occurrence.
    values = [*current, *(parse_go_float(part) for part in text.split(","))]
    return sorted(values, reverse=True)


@attrs.frozen
class CommandLine:
    """The flags a command line set (by result key), in order, and the arguments after them."""

    values: dict[str, object]
    arguments: list[str]


def parse_command_line(specs: Sequence[FlagSpec], argv: Sequence[str]) -> CommandLine:
    """
    Parse C{argv} the way Go's C{flag.FlagSet.Parse} does.

    Parsing stops at the first argument that is not a flag (or after C{--}); a non-boolean flag
    without C{=} takes the next argument whatever it looks like; a boolean flag never does.

    @raise FlagError: an unknown flag, a missing or bad value, or bad syntax.
    @raise HelpRequested: C{-h}/C{-help} (when the table does not define them).
    """
    by_name = {spec.name: spec for spec in specs}
    values: dict[str, object] = {}
    args = list(argv)
    index = 0
    while index < len(args):
        arg = args[index]
        if len(arg) < 2 or arg[0] != "-":
            break
        dashes = 2 if arg[1] == "-" else 1
        if arg == "--":
            index += 1
            break
        name = arg[dashes:]
        if not name or name[0] in "-=":
            raise FlagError(f"bad flag syntax: {arg}")
        index += 1
        name, has_value, text = name.partition("=")
        spec = by_name.get(name)
        if spec is None:
            if name in ("h", "help"):
                raise HelpRequested()
            raise FlagError(f"flag provided but not defined: -{name}")
        current = values.get(spec.key, spec.initial())
        if spec.kind in _BOOLEAN_KINDS:
            try:
                values[spec.key] = _set_from_text(spec, text if has_value else "true", current)
            except _BadValue as e:
                raise FlagError(f"invalid boolean value {_go_quote(text)} for -{name}: {e}") from None
            continue
        if not has_value:
            if index >= len(args):
                raise FlagError(f"flag needs an argument: -{name}")
            text = args[index]
            index += 1
        try:
            values[spec.key] = _set_from_text(spec, text, current)
        except _BadValue as e:
            raise FlagError(f"invalid value {_go_quote(text)} for flag -{name}: {e}") from None
    return CommandLine(values=values, arguments=args[index:])


def _go_quote(text: str) -> str:
    # Go's %q: double quotes with backslash escapes.
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# ---------------------------------------------------------------------------------------------
# The config file


def _from_toml(spec: FlagSpec, value: object) -> object:
    """Convert one TOML value the way NSQ's option resolver coerces config values."""
    kind = spec.kind
    if kind is Kind.STRING:
        if not isinstance(value, str):
            raise _BadValue("expected a string")
        return _set_from_text(spec, value, None)
    if kind is Kind.INT:
        if isinstance(value, bool):
            raise _BadValue("expected an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            return parse_go_int(value)
        raise _BadValue("expected an integer")
    if kind is Kind.FLOAT:
        if isinstance(value, bool):
            raise _BadValue("expected a number")
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            return parse_go_float(value)
        raise _BadValue("expected a number")
    if kind is Kind.DURATION:
        # NSQ reads a bare integer (or a string of digits) in a config file as milliseconds.
        if isinstance(value, bool):
            raise _BadValue("expected a duration")
        if isinstance(value, int):
            return value / 1000
        if isinstance(value, str):
            if value.isdigit():
                return int(value) / 1000
            return parse_go_duration(value)
        raise _BadValue('expected a duration such as "60s"')
    if kind is Kind.BOOL:
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            return parse_go_bool(value)
        raise _BadValue("expected a boolean")
    if kind is Kind.BOOL_OR_CHOICE:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return _set_from_text(spec, value, None)
        raise _BadValue("expected a boolean or one of: " + ", ".join(spec.choices))
    items: list[object]
    if isinstance(value, str):
        items = [part.strip() for part in value.split(",") if part.strip()]
    elif isinstance(value, list):
        items = list(value)
    else:
        raise _BadValue("expected a list")
    if kind is Kind.STRING_LIST:
        if not all(isinstance(item, str) for item in items):
            raise _BadValue("expected a list of strings")
        return items
    floats: list[float] = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int | float | str):
            raise _BadValue("expected a list of numbers")
        floats.append(parse_go_float(item) if isinstance(item, str) else float(item))
    return floats


def load_config(specs: Sequence[FlagSpec], path: str) -> dict[str, object]:
    """
    Read a C{--config} TOML file into result keys. Keys that name no flag are ignored, as NSQ does.

    @raise ConfigError: the file cannot be read or parsed, or a value has the wrong type.
    """
    try:
        with open(path, "rb") as f:
            document = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"failed to load config file {path} - {e}") from None
    by_key = {spec.toml_key: spec for spec in specs if spec.in_config}
    values: dict[str, object] = {}
    for key, raw in document.items():
        spec = by_key.get(key)
        if spec is None:
            continue
        try:
            values[spec.key] = _from_toml(spec, raw)
        except _BadValue as e:
            raise ConfigError(f"failed to load config file {path} - {key}: {e} (got {raw!r})") from None
    return values


def resolve(specs: Sequence[FlagSpec], argv: Sequence[str]) -> dict[str, object]:
    """
    Every flag's value (by L{FlagSpec.key}): the command line over the C{--config} file over the
    defaults. The table must define the C{config} and C{version} flags.

    @raise FlagError: see L{parse_command_line}.
    @raise HelpRequested: see L{parse_command_line}.
    @raise VersionRequested: C{--version} was set (checked before the config file is read, as Go does).
    @raise ConfigError: see L{load_config}.
    """
    command_line = parse_command_line(specs, argv)
    if command_line.values.get(VERSION_FLAG):
        raise VersionRequested()
    values = {spec.key: spec.initial() for spec in specs}
    config_path = command_line.values.get(CONFIG_FLAG)
    if isinstance(config_path, str) and config_path:
        values.update(load_config(specs, config_path))
    values.update(command_line.values)
    return values


# ---------------------------------------------------------------------------------------------
# Usage, version, console-script behaviour


def _default_text(spec: FlagSpec) -> str:
    default = spec.default
    if spec.kind in _LIST_KINDS or default in ("", 0, False, None) or default == "false":
        return ""
    if spec.kind is Kind.STRING:
        return f" (default {_go_quote(str(default))})"
    if spec.kind is Kind.DURATION:
        assert isinstance(default, int | float)
        return f" (default {format_go_duration(default)})"
    if spec.kind is Kind.FLOAT:
        assert isinstance(default, int | float)
        return f" (default {_format_float(default)})"
    if default is True:
        return " (default true)"
    return f" (default {default})"


def usage_text(program: str, specs: Iterable[FlagSpec]) -> str:
    """The usage text, laid out like Go's C{flag.PrintDefaults}, flags sorted by name."""
    lines = [f"Usage of {program}:"]
    for spec in sorted(specs, key=lambda s: s.name):
        head = f"  -{spec.name}"
        placeholder = _PLACEHOLDERS[spec.kind]
        if placeholder:
            head += f" {placeholder}"
        lines.append(head)
        lines.append("    \t" + spec.help.replace("\n", "\n    \t") + _default_text(spec))
    return "\n".join(lines) + "\n"


def version_line(program: str) -> str:
    """What C{--version} prints: C{nsqd v1.3.0-twisted (built w/python3.11.7)}."""
    return f"{program} v{VERSION_STRING} (built w/python{platform.python_version()})"


def parse_or_exit(
    program: str,
    specs: Sequence[FlagSpec],
    argv: Sequence[str],
    *,
    stdout: TextIO,
    stderr: TextIO,
) -> dict[str, object]:
    """
    L{resolve} with a console script's behaviour: help goes to C{stderr} with exit status 0, the
    version line to C{stdout} with 0, a flag error and the usage to C{stderr} with 2.
    L{ConfigError} propagates: the caller reports it in its log format.
    """
    try:
        return resolve(specs, argv)
    except HelpRequested:
        stderr.write(usage_text(program, specs))
        raise SystemExit(0) from None
    except VersionRequested:
        stdout.write(version_line(program) + "\n")
        stdout.flush()
        raise SystemExit(0) from None
    except FlagError as e:
        stderr.write(f"{e}\n{usage_text(program, specs)}")
        raise SystemExit(2) from None


def stop_on_signals(reactor: IReactorCore, call_from_thread: Callable[..., None]) -> None:
    """
    Make SIGINT and SIGTERM stop C{reactor} once, however many arrive.

    Call it once the reactor runs (it replaces the handlers the reactor installed at startup):
    Twisted's own handlers call C{reactor.stop()} for every signal, and a second signal during the
    drain (a terminal's Ctrl-C reaches a whole process group) would log a C{ReactorNotRunning}
    traceback.

    @param call_from_thread: C{reactor.callFromThread}, the only call that is safe in a handler.
    """
    stopping = False

    def on_shutdown() -> None:
        nonlocal stopping
        stopping = True

    def stop(name: str) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        _log.info("{signal}: shutting down", signal=name)
        try:
            reactor.stop()
        except ReactorNotRunning:
            pass

    def handler(signum: int, frame: FrameType | None) -> None:
        call_from_thread(stop, signal.Signals(signum).name)

    reactor.addSystemEventTrigger("before", "shutdown", on_shutdown)
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


__all__ = [
    "CONFIG_FLAG",
    "VERSION_FLAG",
    "CommandLine",
    "ConfigError",
    "FlagError",
    "FlagSpec",
    "HelpRequested",
    "Kind",
    "VersionRequested",
    "format_go_duration",
    "load_config",
    "parse_command_line",
    "parse_go_bool",
    "parse_go_duration",
    "parse_go_duration_ns",
    "parse_go_float",
    "parse_go_int",
    "parse_or_exit",
    "resolve",
    "stop_on_signals",
    "usage_text",
    "version_line",
]
