"""Strict reading of TOML config tables, shared by every config of the project (host service, plugin).

Each table remembers which keys were read, so `finish()` reports the rest as unknown; every error names the
file and the dotted key, and relative paths are taken from the config file's folder.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from contract.errors import ConfigError

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
# Marks a key without default: reading it when absent is an error.
REQUIRED: Any = object()


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
            raise self.error(key, f"expected {what}, got {type(value).__name__} {value!r}")
        return value

    def text(self, key: str, default: Any = None) -> Any:
        return self._get(key, default, (str,), "a string")

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
            raise self.error(key, f"{value} is not a duration in (0, 86400] seconds")
        return value

    def strings(self, key: str, default: Any) -> Any:
        value = self._get(key, default, (list,), "a list of strings")
        if value is not None and not all(isinstance(v, str) for v in value):
            raise self.error(key, f"expected a list of strings, got {value!r}")
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
            raise ConfigError(
                f"{self._file}: unknown key(s){where}: {', '.join(unknown)}; check the spelling"
            )
