"""Config rules live in the msgspec types of the config structs (`Literal`, `msgspec.Meta`); this
module checks a table against those types one key at a time, so every bad key of a file is
reported rather than the first one msgspec meets, and words each problem for a person:
`must be one of debug, info, warning, error, got "verbose"`, not `Invalid enum value 'verbose'`.

A field whose rule reads badly in generic words carries its own in `Meta(description=...)`:
every bad value of that field is then reported as "<description>, got <value>".
"""

from __future__ import annotations

import difflib
import functools
import re
import types
from collections.abc import Callable, Iterable
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import msgspec

__all__ = ["did_you_mean", "field_problem", "literal_values", "render", "table_problems"]

_UNION = (Union, types.UnionType)
_MSGSPEC_NAMES = {
    int: "int",
    float: "float",
    str: "str",
    bool: "bool",
    list: "array",
    tuple: "array",
    set: "array",
    dict: "object",
}


def render(value: Any) -> str:
    """A value as it would be written in the TOML file, cut to 60 characters."""
    text = _render(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _render(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "nothing"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_render(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_render(v)}" for k, v in value.items()) + "}"
    return str(value)


def _split(typ: Any) -> tuple[Any, list[msgspec.Meta]]:
    """Annotated[T, Meta...] -> (T, metas)."""
    if get_origin(typ) is Annotated:
        base, *extra = get_args(typ)
        return base, [m for m in extra if isinstance(m, msgspec.Meta)]
    return typ, []


def _members(typ: Any) -> list[tuple[Any, list[msgspec.Meta]]]:
    """The alternatives of a (possibly annotated) union, each as (type, metas)."""
    base, metas = _split(typ)
    if get_origin(base) in _UNION:
        return [m for arg in get_args(base) for m in _members(arg)]
    return [(base, metas)]


def _description(typ: Any) -> str | None:
    return next((m.description for m in _split(typ)[1] if m.description), None)


def _literals(typ: Any) -> list[Any]:
    return [v for base, _ in _members(typ) if get_origin(base) is Literal for v in get_args(base)]


def _constraint(base: Any, meta: msgspec.Meta) -> str | None:
    """Generic words for the constraints of one Meta."""
    origin = get_origin(base) or base
    if meta.gt == 0 or (meta.ge == 1 and origin is int):
        return "must be positive"
    if meta.ge is not None and meta.le is not None:
        return f"must be between {meta.ge} and {meta.le}"
    if meta.ge is not None:
        return f"must be at least {meta.ge}"
    if meta.le is not None:
        return f"must be at most {meta.le}"
    if meta.min_length == 1:
        return "must be a non-empty string" if origin is str else "must not be empty"
    if meta.min_length is not None and meta.max_length == meta.min_length:
        return f"must have exactly {meta.min_length} item(s)"
    if meta.max_length is not None:
        return f"must have at most {meta.max_length} item(s)"
    return None


def field_problem(name: str, typ: Any, value: Any) -> str | None:
    """None when `value` fits the type `typ` of field `name`, else `"name: what is wrong"`
    (`"name[2]: ..."` when the problem is inside a list)."""
    try:
        msgspec.convert(value, typ)
    except msgspec.ValidationError as exc:
        return _word(name, typ, value, str(exc))
    return None


def _word(name: str, typ: Any, value: Any, text: str) -> str:
    desc = _description(typ)
    if desc:
        return f"{name}: {desc}, got {render(value)}"
    m = re.match(r"(.*) - at `\$(.*)`$", text)
    problem, path = (m.group(1), m.group(2)) if m else (text, "")
    lits = _literals(typ)
    if lits and not path and (problem.startswith("Invalid enum value") or problem.startswith("Expected `")):
        return f"{name}: must be one of {', '.join(str(v) for v in lits)}, got {render(value)}"
    c = re.match(r"Expected `(\w+)` (?:of length )?[<>]=? ", problem)
    if c and not path:
        for base, metas in _members(typ):
            if _MSGSPEC_NAMES.get(get_origin(base) or base) == c.group(1):
                for meta in metas:
                    words = _constraint(base, meta)
                    if words:
                        return f"{name}: {words}, got {render(value)}"
    return f"{name}{path}: {problem}"


Rule = tuple[str, Callable[[Any], "str | None"]]


def table_problems(
    struct: type[msgspec.Struct], data: dict[str, Any], rules: Iterable[Rule] = ()
) -> tuple[list[tuple[str, str]], list[str]]:
    """Checks one table read as `struct`, key by key, then each `(key, rule)` whose key is
    present and of the right type (rules say what a type cannot). Returns (a `(key, "key: ...")`
    per problem, in the table's order; the missing required keys)."""
    fields = _fields(struct)
    forbid = struct.__struct_config__.forbid_unknown_fields
    problems: dict[str, str] = {}
    for key, value in data.items():
        f = fields.get(key)
        if f is None:
            if forbid:
                problems[key] = f"{key}: unknown key{did_you_mean(key, fields)}"
            continue
        problem = field_problem(key, f.type, value)
        if problem:
            problems[key] = problem
    for key, rule in rules:
        if key in data and key not in problems:
            problem = rule(data[key])
            if problem:
                problems[key] = f"{key}: {problem}"
    ordered = [(key, problems[key]) for key in data if key in problems]
    missing = [key for key, f in fields.items() if f.required and key not in data]
    return ordered, missing


@functools.cache
def _fields(struct: type[msgspec.Struct]) -> dict[str, Any]:
    """A struct's fields by name (msgspec evaluates the annotations on every call: ~1 ms)."""
    return {f.encode_name: f for f in msgspec.structs.fields(struct)}


def did_you_mean(word: str, choices: Iterable[str], template: str = "{}") -> str:
    """`"; did you mean X?"` for the closest of `choices` to a misspelled `word`, else ""."""
    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {template.format(close[0])}?" if close else ""


def literal_values(alias: Any) -> tuple[Any, ...]:
    """The values of a Literal alias (for constants derived from the types)."""
    return tuple(_literals(alias))
