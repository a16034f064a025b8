"""Walks every field of a strict TOML config through its loader with wrong values, for the config tests of
both sides. The field list comes from the loader itself (its unknown-key error lists the known keys of each
table), so a field added to a loader is walked without touching the tests."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contract.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
Table = dict[str, Any]
Parse = Callable[[str, Path], object]
BOGUS = "zz_not_a_key"
# Wrong in turn: type, range, empty, control character, list and table where a scalar belongs, and back.
BAD_VALUES: tuple[object, ...] = ("x", "", "a\x00b", -1, 0, 123456789012, 1.5, True, ["x"], [1], {"z": 1})
# A message that gives the fix says what is expected, allowed, known or to be done.
_FIX_RE = re.compile(
    r"expected|outside|one of|known:|must|give|set |use |pick|point it|add |define|needs|like|e\.g\.|check"
)
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _key(k: str) -> str:
    return k if _BARE_KEY.fullmatch(k) else json.dumps(k)


def _value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # JSON's escapes are valid in a TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    assert isinstance(v, dict)
    return "{ " + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + " }"


def dump(table: Table, prefix: tuple[str, ...] = ()) -> str:
    """Enough of a TOML writer for configs: scalars and arrays first, then each sub-table under its header."""
    out = [f"{_key(k)} = {_value(v)}" for k, v in table.items() if not isinstance(v, dict)]
    for k, v in table.items():
        if isinstance(v, dict):
            out += [f"[{'.'.join(_key(p) for p in (*prefix, k))}]", dump(v, (*prefix, k))]
    return "\n".join(out) + "\n"


def leaves(table: Table, prefix: str = "") -> Iterator[str]:
    """The dotted names of a config document's values (not its tables)."""
    for k, v in table.items():
        if isinstance(v, dict):
            yield from leaves(v, f"{prefix}{k}.")
        else:
            yield prefix + k


@dataclass(frozen=True)
class Field:
    table: tuple[str, ...]
    key: str

    @property
    def dotted(self) -> str:
        return ".".join((*self.table, self.key))


def _at(doc: Table, path: tuple[str, ...]) -> Table:
    for p in path:
        doc = doc[p]
    return doc


def _with(base: Table, path: tuple[str, ...], key: str, value: object) -> Table:
    doc: Table = json.loads(json.dumps(base))  # a deep copy
    table = _at(doc, path)
    if value is _MISSING:
        table.pop(key, None)
    else:
        table[key] = value
    return doc


_MISSING = object()


def refusal(parse: Parse, doc: Table, file: Path) -> str | None:
    """The loader's one-line message for `doc`, None when it accepts it; anything but ConfigError fails."""
    try:
        parse(dump(doc), file)
    except ConfigError as e:
        msg = str(e)
        assert "\n" not in msg, f"more than one line: {msg!r}"
        assert msg.startswith(f"{file}: "), f"does not name the file: {msg!r}"
        assert _FIX_RE.search(msg), f"says no fix: {msg!r}"
        return msg.removeprefix(f"{file}: ")
    return None


def fields(parse: Parse, base: Table, file: Path, path: tuple[str, ...] = ()) -> Iterator[Field]:
    """Every field the loader reads, table by table; a table of named tables ([pools.<name>]) is entered."""
    table = _at(base, path)
    if path and table and all(isinstance(v, dict) for v in table.values()):
        for name in table:
            yield from fields(parse, base, file, (*path, name))
        return
    msg = refusal(parse, _with(base, path, BOGUS, 1), file)
    assert msg is not None and BOGUS in msg, f"unknown key in [{'.'.join(path)}] not refused: {msg}"
    known = msg.split("known: ", 1)[1].split(", ")
    for key in known:
        if isinstance(table.get(key), dict):
            yield from fields(parse, base, file, (*path, key))
        else:
            yield Field(path, key)


def check_field(parse: Parse, base: Table, file: Path, field: Field) -> None:
    """Each wrong value is accepted or refused naming the field; at least one is refused; leaving the field
    out is accepted (it has a default) or refused naming it."""
    refused = []
    for bad in BAD_VALUES:
        msg = refusal(parse, _with(base, field.table, field.key, bad), file)
        if msg is not None:
            assert field.dotted in msg, f"{field.dotted} = {bad!r}: message names another field: {msg}"
            refused.append(bad)
    assert refused, f"{field.dotted}: every wrong value was accepted"
    msg = refusal(parse, _with(base, field.table, field.key, _MISSING), file)
    assert msg is None or field.key in msg, f"{field.dotted} left out: message names another field: {msg}"


def entry_fails_with_one_line(args: list[str], doc: Table, cfg: Path, program: str, says: str) -> None:
    """Runs `python -m <args> --config cfg` on `doc` as a user would: exit 2, one stderr line, no traceback."""
    cfg.write_text(dump(doc))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("NRI_PLUGIN_SOCKET", None)
    cmd = [sys.executable, "-m", *args, "--config", str(cfg)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, cwd=cfg.parent)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    (line,) = res.stderr.splitlines()
    assert line.startswith(f"{program}: {cfg}: ") and says in line, line
