"""Typed INI loading shared by shoal-server and shoal-agent.

This file is the single source; ``shoal_agent/inifile.py`` is a symlink to it so
both distributions ship the same code without depending on each other.
Only the standard library may be imported here.
"""
from __future__ import annotations

import configparser
import dataclasses
import logging
import math
import os
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

logger = logging.getLogger(__name__)

Converter = Callable[[str], Any]


class ConfigError(Exception):
    """A configuration problem, naming the file, section and key; exit status 2."""

    exit_code = 2

    def __init__(self, path: str, section: str, key: str, message: str) -> None:
        self.path = path
        self.section = section
        self.key = key
        self.message = message
        where = f"[{section}] {key}" if key else f"[{section}]"
        super().__init__(f"{path}: {where}: {message}")


def to_bool(text: str) -> bool:
    """Parse the boolean spellings configparser accepts (true/false, yes/no, on/off, 1/0)."""
    low = text.strip().lower()
    if low in ("1", "yes", "true", "on"):
        return True
    if low in ("0", "no", "false", "off"):
        return False
    raise ValueError(f"{text!r} is not a valid boolean (use true or false)")


def to_int(low: Optional[int] = None, high: Optional[int] = None) -> Converter:
    """Return a converter to an int within [low, high]."""

    def convert(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise ValueError(f"{text!r} is not a valid integer") from None
        _check_range(value, low, high)
        return value

    return convert


def to_float(low: Optional[float] = None, high: Optional[float] = None) -> Converter:
    """Return a converter to a finite float within [low, high]."""

    def convert(text: str) -> float:
        try:
            value = float(text.strip())
        except ValueError:
            raise ValueError(f"{text!r} is not a valid number") from None
        if not math.isfinite(value):
            raise ValueError(f"{text!r} is not a finite number")
        _check_range(value, low, high)
        return value

    return convert


def _check_range(value: float, low: Optional[float], high: Optional[float]) -> None:
    if low is not None and value < low:
        raise ValueError(f"{value} is below the minimum {low}")
    if high is not None and value > high:
        raise ValueError(f"{value} is above the maximum {high}")


def to_list(text: str) -> Tuple[str, ...]:
    """Split a comma or whitespace separated list; parentheses are tolerated (upstream style)."""
    cleaned = text.strip().strip("()")
    return tuple(part for part in cleaned.replace(",", " ").split() if part)


def to_choice(*choices: str) -> Converter:
    """Return a converter accepting one of ``choices`` (case-insensitive)."""

    def convert(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise ValueError(f"{text!r} is not one of {', '.join(choices)}")
        return value

    return convert


def to_path(text: str) -> str:
    """Expand ``~`` in a path; an empty value stays empty (meaning 'not set')."""
    text = text.strip()
    return os.path.expanduser(text) if text else ""


def _default_converter(default: Any) -> Converter:
    if isinstance(default, bool):
        return to_bool
    if isinstance(default, int):
        return to_int()
    if isinstance(default, float):
        return to_float()
    if isinstance(default, tuple):
        return to_list
    return lambda text: text.strip()


def setting(default: Any, parse: Optional[Converter] = None, aliases: Sequence[str] = ()) -> Any:
    """Declare a config key on a section dataclass: default, converter and accepted aliases."""
    return dataclasses.field(default=default, metadata={"parse": parse, "aliases": tuple(aliases)})


@dataclasses.dataclass(frozen=True)
class Schema:
    """How an INI file maps onto section dataclasses.

    ``legacy_sections`` maps an old section name to the current one (keys are then looked up
    through aliases); ``obsolete`` lists sections or ``section.key`` names that older releases
    used and that are accepted with a warning so existing files keep working. It may be a
    mapping from each name to what replaces it ("replaced by [general] geoip_database") or why
    it is ignored; the warning then says so. Each program has its own table.
    """

    sections: Mapping[str, type]
    legacy_sections: Mapping[str, str] = dataclasses.field(default_factory=dict)
    obsolete: Union[Iterable[str], Mapping[str, str]] = ()

    def obsolete_note(self, name: str) -> Optional[str]:
        """What the warning for obsolete ``name`` ("section" or "section.key") says; None if current."""
        notes = self.obsolete
        if isinstance(notes, Mapping):
            return notes.get(name)
        return "ignored" if name in set(notes) else None


def load_ini(path: Optional[str], schema: Schema) -> Dict[str, Any]:
    """Read ``path`` (or only defaults when None) into one instance per section."""
    values: Dict[str, Dict[str, Any]] = {name: {} for name in schema.sections}
    if path is None:
        return {name: cls() for name, cls in schema.sections.items()}
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#", ";"))
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except OSError as err:
        raise ConfigError(path, "-", "", f"cannot read the file: {err.strerror}") from None
    except (configparser.Error, UnicodeDecodeError) as err:
        raise ConfigError(path, "-", "", f"not a valid INI file: {str(err).splitlines()[0]}") from None
    for raw_section in parser.sections():
        section = schema.legacy_sections.get(raw_section, raw_section)
        if section not in schema.sections:
            section_note = schema.obsolete_note(raw_section)
            if section_note is not None:
                # One warning per key, each naming what replaces it (or that it is ignored).
                keys = [key for key, _ in parser.items(raw_section)] or [""]
                for key in keys:
                    key_note = (schema.obsolete_note(f"{raw_section}.{key}") if key else None) or section_note
                    where = f"[{raw_section}] {key}" if key else f"section [{raw_section}]"
                    logger.warning("%s: %s is obsolete: %s", path, where, key_note)
                continue
            known = ", ".join(sorted(schema.sections))
            raise ConfigError(path, raw_section, "", f"unknown section (known: {known})")
        fields = {f.name: f for f in dataclasses.fields(schema.sections[section])}
        by_name = {alias: f for f in fields.values() for alias in (f.name,) + f.metadata.get("aliases", ())}
        for key, text in parser.items(raw_section):
            field = by_name.get(key)
            if field is None:
                note = schema.obsolete_note(f"{raw_section}.{key}")
                if note is None and raw_section != section:  # [squid] squid_x read as [cache] cache_x
                    note = schema.obsolete_note(f"{section}.{key}")
                if note is not None:
                    logger.warning("%s: [%s] %s is obsolete: %s", path, raw_section, key, note)
                    continue
                raise ConfigError(path, raw_section, key, "unknown key")
            convert = field.metadata.get("parse") or _default_converter(field.default)
            try:
                values[section][field.name] = convert(text)
            except ValueError as err:
                raise ConfigError(path, raw_section, key, str(err)) from None
    return {name: cls(**values[name]) for name, cls in schema.sections.items()}


def find_config(explicit: Optional[str], env_var: str, filename: str,
                system_dir: str = "/etc/shoal", home: Optional[str] = None) -> Optional[str]:
    """Pick the config file: explicit path, then ``$env_var``, then /etc/shoal, then ~/.shoal."""
    if explicit:
        return explicit
    from_env = os.environ.get(env_var)
    if from_env:
        return from_env
    for folder in (system_dir, os.path.join(home or os.path.expanduser("~"), ".shoal")):
        candidate = os.path.join(folder, filename)
        if os.path.isfile(candidate):
            return candidate
    return None
