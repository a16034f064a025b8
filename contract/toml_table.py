"""Strict reading of TOML config tables, shared by every config of the project (host service, plugin).

Each table remembers which keys were read, so `finish()` reports the rest as unknown; every error names the
file and the dotted key, and relative paths are taken from the config file's folder.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from contract.errors import ConfigError

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
# Marks a key without default: reading it when absent is an error.
REQUIRED: Any = object()
# No config string needs a control character; a NUL or newline in a path or name only fails later.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_TOML_TYPES = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array", dict: "table"}


def _shown(value: Any) -> str:
    """A TOML value for an error line: its TOML type and a short repr (one line, whatever it holds)."""
    kind = next((n for t, n in _TOML_TYPES.items() if isinstance(value, t)), "date/time")
    text = repr(value)
    return f"{kind} {text if len(text) <= 40 else text[:37] + '...'}"


def _key_shown(key: str) -> str:
    return key if key.isprintable() and key.strip() == key and key else repr(key)


def read_config(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as e:
        raise ConfigError(
            f"cannot read config {path}: {e.strerror}; pass --config with a readable file"
        ) from e


def parse_toml(text: str, path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from e


class TomlTable:
    """Reads one TOML table, remembering which keys were used so the rest can be reported as unknown."""

    def __init__(self, data: Mapping[str, Any], where: str, file: Path) -> None:
        self._data, self._where, self._file, self._used = data, where, file, set[str]()

    def error(self, key: str, what: str) -> ConfigError:
        return ConfigError(f"{self._file}: {self._key(key)}: {what}")

    def _key(self, key: str) -> str:
        return f"{self._where}.{key}" if self._where else key

    def _get(self, key: str, default: Any, types: tuple[type, ...], what: str) -> Any:
        self._used.add(key)
        if key not in self._data:
            if default is REQUIRED:
                raise self.error(key, f"missing; expected {what}")
            return default
        value = self._data[key]
        # bool is an int in Python; TOML keeps them apart, so do we.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise self.error(key, f"expected {what}, got {_shown(value)}")
        return value

    def text(self, key: str, default: Any = None) -> Any:
        value = self._get(key, default, (str,), "a string")
        if isinstance(value, str) and _CONTROL_RE.search(value):
            raise self.error(key, f"{value!r} holds a control character; use plain text on one line")
        return value

    def flag(self, key: str, default: Any) -> Any:
        return self._get(key, default, (bool,), "true or false")

    def integer(self, key: str, default: Any, lo: int, hi: int) -> Any:
        value = self._get(key, default, (int,), f"an integer in {lo}..{hi}")
        if value is not None and not lo <= value <= hi:
            raise self.error(key, f"{value} is outside {lo}..{hi}")
        return value

    def number(self, key: str, default: float, lo: float, hi: float) -> float:
        value = float(self._get(key, default, (int, float), f"a number in {lo}..{hi}"))
        if not lo <= value <= hi:
            raise self.error(key, f"{value} is outside {lo}..{hi}")
        return value

    def seconds(self, key: str, default: float) -> float:
        value = float(self._get(key, default, (int, float), "a number of seconds"))
        if not 0 < value <= 86400:
            raise self.error(key, f"{value} is not a duration in (0, 86400] seconds; give one like 5 or 0.5")
        return value

    def strings(self, key: str, default: Any) -> Any:
        value = self._get(key, default, (list,), "a list of strings")
        bad = next((v for v in value or () if not isinstance(v, str) or _CONTROL_RE.search(v)), None)
        if bad is not None:
            raise self.error(key, f"expected a list of one-line strings, got {_shown(bad)} in it")
        return value

    def table(self, key: str, required: bool = False) -> TomlTable | None:
        value = self._get(key, REQUIRED if required else None, (dict,), "a table")
        return None if value is None else TomlTable(value, self._key(key), self._file)

    def subtables(self, key: str) -> list[tuple[str, TomlTable]]:
        """The named tables of `[key.<name>]`, each name checked."""
        outer = self.table(key, required=True)
        assert outer is not None
        out = []
        for name in list(outer._data):
            inner = outer.table(outer.name_check(name, name), required=True)
            assert inner is not None
            out.append((name, inner))
        outer.finish()
        return out

    def path(self, key: str, default: Any = None) -> Path | None:
        value = self.text(key, default)
        if value is None:
            return None
        if not value.strip():
            raise self.error(key, "is empty; give a path (relative ones are taken from the config's folder)")
        p = Path(value)
        return p if p.is_absolute() else (self._file.parent / p)

    def name_check(self, key: str, value: str) -> str:
        if not _NAME_RE.fullmatch(value):
            raise self.error(
                key, f"name {value!r} must be 1-63 of A-Z a-z 0-9 _ . - (not starting with . _ -)"
            )
        return value

    def finish(self) -> None:
        unknown = sorted(set(self._data) - self._used)
        if unknown:
            where = f" in [{self._where}]" if self._where else ""
            near = difflib.get_close_matches(unknown[0], self._used, n=1)
            guess = f"did you mean {near[0]}? " if near else ""
            raise ConfigError(
                f"{self._file}: unknown key(s){where}: {', '.join(map(_key_shown, unknown))}; {guess}"
                f"known: {', '.join(sorted(self._used))}"
            )
