"""
What the daemons' option modules share: building a flag table whose defaults come from an attrs
options class (L{flag_maker}), turning L{twisted_nsq._cli.resolve}'s values into such a class
(L{options_from}, L{parse_options_from}), and the start-up checks every daemon makes the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import attrs

from twisted_nsq._cli import FlagSpec, Kind, resolve
from twisted_nsq._log import LOG_LEVELS

__all__ = [
    "check_log_level",
    "check_not_negative",
    "flag_maker",
    "options_from",
    "parse_options_from",
]

_T = TypeVar("_T")


def flag_maker(defaults: object) -> Callable[..., FlagSpec]:
    """
    A flag builder for one daemon's table, C{flag(name, kind, help, attr=, config_key=, choices=)}:
    each flag's default is the attribute of C{defaults} (an options instance with every default)
    that the flag sets, C{attr} or the name with underscores.
    """

    def flag(
        name: str,
        kind: Kind,
        help: str,
        *,
        attr: str = "",
        config_key: str = "",
        choices: tuple[str, ...] = (),
    ) -> FlagSpec:
        return FlagSpec(
            name=name,
            kind=kind,
            default=getattr(defaults, attr or name.replace("-", "_")),
            help=help,
            attr=attr,
            config_key=config_key,
            choices=choices,
        )

    return flag


def options_from(cls: Callable[..., _T], values: Mapping[str, object]) -> _T:
    """
    Build the attrs options class C{cls} from L{resolve}'s result, ignoring the flags that are not
    settings (C{--version}, C{--config}).
    """
    fields = attrs.fields_dict(cls)  # type: ignore[arg-type]
    return cls(**{key: value for key, value in values.items() if key in fields})


def parse_options_from(cls: Callable[..., _T], flags: Sequence[FlagSpec], argv: Sequence[str]) -> _T:
    """
    Parse a daemon's command line (Go flag syntax, C{--config} TOML) into its options class; not
    yet validated.

    @raise twisted_nsq._cli.FlagError: a bad flag or value.
    @raise twisted_nsq._cli.HelpRequested: C{-h}/C{--help}.
    @raise twisted_nsq._cli.VersionRequested: C{--version}.
    @raise twisted_nsq._cli.ConfigError: an unreadable or wrong config file.
    """
    return options_from(cls, resolve(flags, argv))


def check_log_level(level: str) -> None:
    """@raise ValueError: C{level} is not a C{--log-level} word."""
    if level not in LOG_LEVELS:
        raise ValueError(f"--log-level must be one of {', '.join(LOG_LEVELS)} (got {level!r})")


def check_not_negative(options: Any, names: Iterable[str]) -> None:
    """@raise ValueError: C{--NAME must not be negative} for the first of C{names} below zero."""
    for name in names:
        if getattr(options, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must not be negative")
