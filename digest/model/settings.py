"""The shapes settings are written in (durations, sizes) and how their errors read. Pure.

feeds.yaml (config.py) and the rule spec (rulespec.py) are validated by pydantic; every error is
said as one line naming the file, the key path and the fix.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field, ValidationError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 10**6,
    "mb": 10**6,
    "mib": 2**20,
    "g": 10**9,
    "gb": 10**9,
    "gib": 2**30,
}


def parse_duration(value: Any) -> Any:
    """`90`, `"90s"`, `"15m"`, `"1h30m"`, `"2d"` -> seconds."""
    if isinstance(value, str):
        parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smhdw])", value.strip().lower())
        joined = "".join(f"{n}{u}" for n, u in parts)
        if not parts or joined != re.sub(r"\s+", "", value.strip().lower()):
            raise ValueError(f"{value!r} is not a duration; write seconds (90) or e.g. '15m', '1h', '2d'")
        return sum(float(n) * _UNITS[u] for n, u in parts)
    return value


def parse_size(value: Any) -> Any:
    """`1048576`, `"5 MiB"`, `"500kB"` -> bytes."""
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", value)
        if not m or m.group(2).lower() not in _SIZE_UNITS:
            raise ValueError(f"{value!r} is not a size; write bytes or e.g. '5 MiB', '500 kB'")
        return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])
    return value


Duration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
Size = Annotated[int, BeforeValidator(parse_size), Field(gt=0)]


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _allowed_keys(root: type[BaseModel] | None, loc: tuple[int | str, ...]) -> list[str]:
    model: Any = root
    if model is None:
        return []
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        model = next((a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if model is None:
            return []
    return sorted(getattr(model, "model_fields", {}))


def format_validation_error(
    err: ValidationError, source: str, prefix: tuple[str, ...] = (), *, root: type[BaseModel] | None = None
) -> str:
    """One line per error: the file, the key path and the fix (`root`: the model the path starts at,
    for the list of allowed keys)."""
    lines = []
    for e in err.errors():
        loc = (*prefix, *tuple(e["loc"]))
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(root, loc)
            hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
            lines.append(f"{source}: {_loc(loc)}: unknown key; remove it or fix its spelling{hint}")
        elif e["type"] == "missing":
            lines.append(f"{source}: {_loc(loc)}: required key is missing; add it")
        elif e["type"] in _EXPECTED:
            lines.append(f"{source}: {_loc(loc)}: {e['input']!r} is not {_EXPECTED[e['type']]}")
        else:
            msg = str(e["msg"]).removeprefix("Value error, ")
            if msg.startswith("Input should be"):  # pydantic's wording: say what was given, and the fix
                msg = f"{e['input']!r} is not accepted: it should be{msg.removeprefix('Input should be')}"
            lines.append(f"{source}: {_loc(loc)}: {msg}")
    return "\n".join(lines)


# pydantic error types, said as what the key needs
_EXPECTED = {
    "int_type": "a whole number; write e.g. 4",
    "int_parsing": "a whole number; write e.g. 4",
    "int_from_float": "a whole number; write e.g. 4",
    "float_type": "a number; write e.g. 1.5",
    "float_parsing": "a number; write e.g. 1.5",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "text; put it in quotes",
    "tuple_type": "a list; write e.g. [a, b] or one item per line under the key, each with '- '",
    "list_type": "a list; write e.g. [a, b] or one item per line under the key, each with '- '",
    "dict_type": "a mapping; write key: value lines under it",
    "model_type": "a mapping; write key: value lines under it",
    "model_attributes_type": "a mapping; write key: value lines under it",
}
