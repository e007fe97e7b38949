"""Output for people (aligned tables, key/value lists) and for scripts (``--json``).

Pure string builders: the CLI decides where the text goes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["cell", "json_text", "key_values", "table"]

# A nested mapping or list longer than this is summarised ("120 entries") in key_values.
MAX_INLINE = 8


def json_text(value: Any) -> str:
    """Indented JSON with a final newline, non-ASCII kept readable."""
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def cell(value: Any) -> str:
    """One value as table text: ``-`` for null, yes/no, compact floats, JSON otherwise."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return format(value, ".6g")
    if isinstance(value, (int, str)):
        return str(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def table(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Rows as aligned columns under a header; numbers right-aligned.

    A key missing from a row shows as ``-``. No rows: the header alone.
    """
    materialised = list(rows)
    cells = [[cell(row.get(column)) for column in columns] for row in materialised]
    numeric = [
        any(_is_number(row.get(c)) for row in materialised)
        and all(_is_number(row.get(c)) or row.get(c) is None for row in materialised)
        for c in columns
    ]
    widths = [max([len(c)] + [len(line[i]) for line in cells]) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        parts = [
            value.rjust(width) if right else value.ljust(width)
            for value, width, right in zip(values, widths, numeric)
        ]
        return "  ".join(parts).rstrip()

    header = [c.upper() for c in columns]
    return "\n".join([line(header)] + [line(values) for values in cells]) + "\n"


def _flatten(prefix: str, value: Any, out: list[tuple[str, str]]) -> None:
    if isinstance(value, Mapping) and value and len(value) <= MAX_INLINE:
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), inner, out)
    elif isinstance(value, Mapping):
        out.append((prefix, f"{len(value)} entries" if value else "-"))
    elif isinstance(value, list) and len(value) > MAX_INLINE:
        out.append((prefix, f"{len(value)} items"))
    elif isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value):
        out.append((prefix, ", ".join(cell(v) for v in value) if value else "-"))
    else:
        out.append((prefix, cell(value)))


def key_values(data: Mapping[str, Any]) -> str:
    """A mapping as ``key  value`` lines; nested mappings become dotted keys.

    Mappings and lists longer than ``MAX_INLINE`` are summarised by their size: people
    get an overview, ``--json`` has everything.
    """
    pairs: list[tuple[str, str]] = []
    for key, value in data.items():
        _flatten(str(key), value, pairs)
    width = max((len(key) for key, _ in pairs), default=0)
    return "".join(f"{key.ljust(width)}  {value}\n" for key, value in pairs)
