# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, auto_pickle=False
"""Argument validation and conversion (the PhoenixGenApi ``ArgumentHandler`` port).

A function config declares ``arg_types`` (argument name -> type spec) and ``arg_orders``
(list of names, or ``"map"``).  :class:`Validator` compiles that once, at config load time,
and :meth:`Validator.convert` checks a request's ``args`` dict and turns it into the
positional argument list the function is called with.

Public API::

    class ArgumentError(ValueError)     # str(exc) is the client-facing message
    class Limits(string_max_bytes: int = 3000, list_max_items: int = 1000,
                 map_max_items: int = 1000)
    class Validator(arg_types: dict | None, arg_orders: list[str] | str | None = None,
                    request_type: str = "", limits: Limits | None = None)
        .convert(args: dict | None) -> list
        .names -> tuple[str, ...]

Spec forms (values of ``arg_types``):

* ``"string"``                               -- simple
* ``["string", 100]``                        -- tuple form, the number is ``max_bytes`` for
  string and ``max_items`` for list, list_string, list_num, list_uuid, list_map, map
* ``{"type": "string", "max_bytes": 100, "allow_nil": True, "default_value": "x"}``
  -- extended; options: ``max_bytes`` (string), ``max_items`` (list types, map),
  ``max_item_bytes`` (list_string), ``allow_nil`` / ``allow_nil?``, ``default_value``,
  ``required`` / ``accept`` (map).  ``default_value: None`` means "no default" (as in the
  reference); an empty ``accept`` list means "no restriction" (as in the reference).

Types: string, num, boolean, uuid, datetime, naive_datetime, map, list, list_string,
list_num, list_uuid, list_map, any.
"""

cimport cython
from cpython.dict cimport PyDict_Next, PyDict_SetItem, PyDict_Size
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.ref cimport Py_INCREF, PyObject

import json as _json
from datetime import datetime as _datetime

from genapi.errors import ArgumentError

cdef extern from "Python.h":
    ctypedef unsigned char Py_UCS1
    ctypedef unsigned short Py_UCS2
    bint PyUnicode_Check(object o)
    bint PyUnicode_IS_ASCII(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    int PyUnicode_KIND(object o)
    void* PyUnicode_DATA(object o)
    Py_UCS1* PyUnicode_1BYTE_DATA(object o)
    bint PyLong_Check(object o)
    bint PyBool_Check(object o)
    bint PyFloat_Check(object o)
    bint PyList_Check(object o)
    bint PyTuple_Check(object o)
    bint PyDict_Check(object o)
    Py_ssize_t PyList_GET_SIZE(object o)
    PyObject* PyList_GET_ITEM(object o, Py_ssize_t i)
    PyObject* PyDict_GetItemWithError(object d, object key) except? NULL


# --------------------------------------------------------------------------- type codes

cdef enum:
    T_STRING = 0
    T_NUM = 1
    T_BOOLEAN = 2
    T_UUID = 3
    T_DATETIME = 4
    T_NAIVE_DATETIME = 5
    T_MAP = 6
    T_LIST = 7
    T_LIST_STRING = 8
    T_LIST_NUM = 9
    T_LIST_UUID = 10
    T_LIST_MAP = 11
    T_ANY = 12

cdef enum:
    MODE_NONE = 0      # no declared arguments -> []
    MODE_MAP = 1       # arg_orders == "map" -> [dict]
    MODE_SINGLE = 2    # one argument, no arg_orders -> [value]
    MODE_ORDERED = 3   # values in arg_orders order

cdef enum:
    STACK_SLOTS = 16   # declared args looked up into a stack array up to this many
    RENDER_MAX = 60    # rendered values in messages are cut to this many chars + "..."

_TYPE_CODES = {
    "string": T_STRING,
    "num": T_NUM,
    "boolean": T_BOOLEAN,
    "uuid": T_UUID,
    "datetime": T_DATETIME,
    "naive_datetime": T_NAIVE_DATETIME,
    "map": T_MAP,
    "list": T_LIST,
    "list_string": T_LIST_STRING,
    "list_num": T_LIST_NUM,
    "list_uuid": T_LIST_UUID,
    "list_map": T_LIST_MAP,
    "any": T_ANY,
}

# Options every type accepts, and the extra ones per type.
_COMMON_OPTIONS = frozenset(("type", "allow_nil", "allow_nil?", "default_value"))
_TYPE_OPTIONS = {
    "string": frozenset(("max_bytes",)),
    "list": frozenset(("max_items",)),
    "list_string": frozenset(("max_items", "max_item_bytes")),
    "list_num": frozenset(("max_items",)),
    "list_uuid": frozenset(("max_items",)),
    "list_map": frozenset(("max_items",)),
    "map": frozenset(("max_items", "required", "accept")),
}
_ALL_OPTIONS = _COMMON_OPTIONS.union(*_TYPE_OPTIONS.values())


def _guess(word, choices):
    """`; did you mean "X"?` for a misspelled type or option (spec compile time only)."""
    from difflib import get_close_matches
    if not PyUnicode_Check(word):
        return ""
    close = get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f"; did you mean {_quote(close[0])}?" if close else ""


# The likeliest names a Python or JSON user writes for a type, and the genapi type each means:
# suggested, never accepted as aliases. `int`/`integer` cannot be one: `num` takes any number
# (2.5 too), so the alias would promise a check that is not made. The others are unambiguous,
# but one spelling per type keeps the vocabulary PhoenixGenApi's: a config moves between the
# two, and `genapi check`, genapi.list_apis and the clients show the one name.
_TYPE_WORDS = {
    "int": ("num", "any JSON number, 2.5 too: there is no integer-only type"),
    "integer": ("num", "any JSON number, 2.5 too: there is no integer-only type"),
    "float": ("num", "any JSON number"),
    "double": ("num", "any JSON number"),
    "number": ("num", "any JSON number"),
    "decimal": ("num", "any JSON number"),
    "str": ("string", ""),
    "text": ("string", ""),
    "bool": ("boolean", ""),
    "dict": ("map", "a JSON object"),
    "object": ("map", "a JSON object"),
    "mapping": ("map", "a JSON object"),
    "array": ("list", "or list_string, list_num, list_uuid, list_map for items of one type"),
    "tuple": ("list", "or list_string, list_num, list_uuid, list_map for items of one type"),
    "set": ("list", "or list_string, list_num, list_uuid, list_map for items of one type"),
    "date": ("naive_datetime", "or datetime for a time with its UTC offset"),
    "timestamp": ("datetime", "ISO 8601 with a UTC offset"),
}


def _guess_type(word):
    """`; did you mean "num"?` for a Python or JSON name of a type, a wrong case or a misspelling."""
    if not PyUnicode_Check(word):
        return ""
    lower = word.lower()
    if lower in _TYPE_CODES:
        return f"; did you mean {_quote(lower)}?"
    hint = _TYPE_WORDS.get(lower.removeprefix("typing."))
    if hint is not None:
        return f"; did you mean {_quote(hint[0])}? ({hint[1]})" if hint[1] else f"; did you mean {_quote(hint[0])}?"
    return _guess(word, _TYPE_CODES)


# Which limit the number of the tuple form ["type", n] sets.
_TUPLE_OPTION = {
    "string": "max_bytes",
    "list": "max_items",
    "list_string": "max_items",
    "list_num": "max_items",
    "list_uuid": "max_items",
    "list_map": "max_items",
    "map": "max_items",
}
_OPTION_OWNERS = {}
for _t, _opts in _TYPE_OPTIONS.items():
    for _o in _opts:
        _OPTION_OWNERS.setdefault(_o, []).append(_t)
del _t, _opts, _o

_fromisoformat = _datetime.fromisoformat


# --------------------------------------------------------------------------- rendering
# Error path only: values are rendered as compact JSON, truncated to 60 chars + "...".

_encode = _json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


cdef object _shrink(object v, int depth):
    """A copy of ``v`` whose rendering has the same first RENDER_MAX chars, but is bounded
    in size and depth (every item / level costs at least one char of rendering)."""
    cdef Py_ssize_t i
    if PyUnicode_Check(v):
        if PyUnicode_GET_LENGTH(v) > RENDER_MAX + 1:
            return v[:RENDER_MAX + 1]
        return v
    if depth > RENDER_MAX + 1:
        return None
    if PyList_Check(v) or PyTuple_Check(v):
        out = []
        i = 0
        for item in v:
            if i > RENDER_MAX // 2 + 1:
                break
            out.append(_shrink(item, depth + 1))
            i += 1
        return out
    if PyDict_Check(v):
        d = {}
        i = 0
        for key, item in v.items():
            if i > RENDER_MAX // 2 + 1:
                break
            d[_shrink(key, depth + 1) if PyUnicode_Check(key) else key] = _shrink(item, depth + 1)
            i += 1
        return d
    return v


cdef str _render(object v):
    cdef str s
    try:
        v = _shrink(v, 0)
    except Exception:
        pass
    try:
        s = _encode(v)
    except Exception:
        try:
            s = repr(v)
        except Exception:
            s = "<" + type(v).__name__ + ">"
    if len(s) > RENDER_MAX:
        s = s[:RENDER_MAX] + "..."
    return s


cdef str _render_list(object items):
    """``["a", "b"]`` -- like Elixir's inspect of a list, at most 50 items."""
    cdef list parts = []
    for item in items:
        if len(parts) >= 50:
            parts.append("...")
            break
        parts.append(_render(item))
    return "[" + ", ".join(parts) + "]"


cdef str _quote(object name):
    try:
        return _encode(name)
    except Exception:
        return repr(name)


def _sort_key(k):
    # str keys first, in their order; anything else (Python API only) after, by rendering
    if PyUnicode_Check(k):
        return (0, k)
    return (1, _render(k))


# --------------------------------------------------------------------------- primitives

cdef Py_ssize_t _utf8_len(object s):
    """UTF-8 byte length of a str without encoding it (lone surrogates count 3 bytes)."""
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(s)
    cdef Py_ssize_t total = n
    cdef Py_ssize_t i
    cdef int kind
    cdef void* data
    cdef Py_UCS1* d1
    cdef Py_UCS2* d2
    cdef Py_UCS4* d4
    cdef Py_UCS4 c
    if PyUnicode_IS_ASCII(s):
        return n
    kind = PyUnicode_KIND(s)
    data = PyUnicode_DATA(s)
    if kind == 1:
        d1 = <Py_UCS1*>data
        for i in range(n):
            if d1[i] >= 0x80:
                total += 1
    elif kind == 2:
        d2 = <Py_UCS2*>data
        for i in range(n):
            c = d2[i]
            if c >= 0x80:
                total += 2 if c >= 0x800 else 1
    else:
        d4 = <Py_UCS4*>data
        for i in range(n):
            c = d4[i]
            if c >= 0x80:
                if c >= 0x10000:
                    total += 3
                elif c >= 0x800:
                    total += 2
                else:
                    total += 1
    return total


cdef inline bint _str_over(object s, Py_ssize_t max_bytes):
    """True when the UTF-8 encoding of ``s`` is longer than ``max_bytes`` bytes."""
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(s)
    if n > max_bytes:            # every char is at least one byte
        return True
    if PyUnicode_IS_ASCII(s):    # ... and exactly one here
        return False
    if n <= max_bytes // 4:      # at most four bytes per char
        return False
    return _utf8_len(s) > max_bytes


cdef inline bint _is_hex(Py_UCS1 c):
    return (48 <= c <= 57) or (65 <= c <= 70) or (97 <= c <= 102)


cdef bint _is_uuid(object s):
    """Canonical 8-4-4-4-12 hex form, either case."""
    cdef Py_UCS1* p
    cdef Py_ssize_t i
    if PyUnicode_GET_LENGTH(s) != 36 or not PyUnicode_IS_ASCII(s):
        return False
    p = PyUnicode_1BYTE_DATA(s)
    for i in range(36):
        if i == 8 or i == 13 or i == 18 or i == 23:
            if p[i] != 45:  # '-'
                return False
        elif not _is_hex(p[i]):
            return False
    return True


cdef inline bint _is_num(object v):
    if PyFloat_Check(v):
        return True
    return PyLong_Check(v) and not PyBool_Check(v)


cdef inline bint _is_scalar_nonstr(object v):
    return v is None or PyLong_Check(v) or PyFloat_Check(v)   # bool is a PyLong


# --------------------------------------------------------------------------- errors

cdef object _type_error(_Spec s, object v):
    return ArgumentError(
        f"invalid argument type for {s.qname}, expected :{s.type_name}, got {_render(v)}")


cdef object _item_error(_Spec s, str expected, object item):
    return ArgumentError(
        f"invalid item in {s.type_name} argument {s.qname}: expected {expected}, got {_render(item)}")


cdef object _items_error(_Spec s, Py_ssize_t max_items):
    return ArgumentError(
        f"{s.type_name} argument exceeds max items of {max_items} (argument {s.qname})")


# --------------------------------------------------------------------------- checks

cdef int _check_map(_Spec s, object d, Py_ssize_t max_items, bint as_item) except -1:
    """Validate a dict (``d`` is known to be one) for a map argument, or for an item of a
    list_map argument when ``as_item``."""
    cdef Py_ssize_t pos = 0
    cdef PyObject* kp
    cdef PyObject* vp
    cdef list rejected
    if PyDict_Size(d) > max_items:
        raise ArgumentError(f"map argument exceeds max items of {max_items} (argument {s.qname})")
    if not as_item:
        if s.required:
            missing = [k for k in s.required if k not in d]
            if missing:
                raise ArgumentError(
                    f"map argument missing required keys: {_render_list(missing)} (argument {s.qname})")
        if s.accept is not None:
            rejected = None
            while PyDict_Next(d, &pos, &kp, &vp):
                key = <object>kp
                if not PyUnicode_Check(key):
                    raise _type_error(s, d)
                if key not in s.accept:
                    if rejected is None:
                        rejected = []
                    rejected.append(key)
            if rejected is not None:
                rejected.sort()
                raise ArgumentError(
                    f"map argument contains rejected keys: {_render_list(rejected)} (argument {s.qname})")
            pos = 0
    while PyDict_Next(d, &pos, &kp, &vp):
        key = <object>kp
        if not PyUnicode_Check(key):
            if as_item:
                raise _item_error(s, "map", d)
            raise _type_error(s, d)
        val = <object>vp
        if PyUnicode_Check(val):
            if _str_over(val, s.string_max):
                raise ArgumentError(
                    f"nested map string value exceeds max byte size for key {_render(key)} "
                    f"(argument {s.qname})")
        elif _is_scalar_nonstr(val):
            pass
        elif PyDict_Check(val):
            raise ArgumentError(f"nested map is not supported yet (argument {s.qname})")
        elif PyList_Check(val) or PyTuple_Check(val):
            raise ArgumentError(f"nested list is not supported yet (argument {s.qname})")
        else:
            raise ArgumentError(
                f"unsupported type {_render(val)} in map for key {_render(key)} (argument {s.qname})")
    return 0


cdef int _check_list(_Spec s, object lst) except -1:
    """Validate a list (``lst`` is known to be one) for the list types."""
    cdef Py_ssize_t n = PyList_GET_SIZE(lst)
    cdef Py_ssize_t i
    cdef int code = s.code
    if n > s.max_items:
        raise _items_error(s, s.max_items)
    if code == T_LIST_STRING:
        for i in range(n):
            item = <object>PyList_GET_ITEM(lst, i)
            if not PyUnicode_Check(item):
                raise _item_error(s, "string", item)
            if _str_over(item, s.max_item_bytes):
                raise ArgumentError(
                    f"string item in list_string exceeds max byte size of {s.max_item_bytes} "
                    f"(argument {s.qname})")
    elif code == T_LIST_NUM:
        for i in range(n):
            item = <object>PyList_GET_ITEM(lst, i)
            if not _is_num(item):
                raise _item_error(s, "num", item)
    elif code == T_LIST_UUID:
        for i in range(n):
            item = <object>PyList_GET_ITEM(lst, i)
            if not PyUnicode_Check(item) or not _is_uuid(item):
                raise _item_error(s, "uuid", item)
    elif code == T_LIST_MAP:
        for i in range(n):
            item = <object>PyList_GET_ITEM(lst, i)
            if not PyDict_Check(item):
                raise _item_error(s, "map", item)
            _check_map(s, item, s.map_max, True)
    else:  # T_LIST: scalars only
        for i in range(n):
            item = <object>PyList_GET_ITEM(lst, i)
            if PyUnicode_Check(item):
                if _str_over(item, s.string_max):
                    raise ArgumentError(
                        f"string item in list exceeds max byte size of {s.string_max} "
                        f"(argument {s.qname})")
            elif _is_scalar_nonstr(item):
                pass
            elif PyList_Check(item) or PyTuple_Check(item):
                raise ArgumentError(f"nested list is not supported yet (argument {s.qname})")
            elif PyDict_Check(item):
                raise ArgumentError(f"nested map is not supported yet (argument {s.qname})")
            else:
                raise ArgumentError(
                    f"unsupported type {_render(item)} in list (argument {s.qname})")
    return 0


cdef object _parse_datetime(_Spec s, object v):
    cdef bint naive = s.code == T_NAIVE_DATETIME
    if not PyUnicode_Check(v):
        raise ArgumentError(
            f"invalid argument type for {s.qname}, expected :{s.type_name} (ISO 8601 string), "
            f"got {_render(v)}")
    try:
        dt = _fromisoformat(v)
    except (ValueError, TypeError, OverflowError):
        raise ArgumentError(f"invalid {s.type_name} format for {s.qname}: {_render(v)}") from None
    if naive:
        if dt.tzinfo is not None:
            dt = dt.replace(tzinfo=None)
    elif dt.tzinfo is None:
        raise ArgumentError(
            f'datetime must include timezone offset (e.g. "Z" or "+00:00") for argument {s.qname}')
    return dt


cdef object _check(_Spec s, object v):
    """Validate a present, non-None value; return the converted value."""
    cdef int code = s.code
    if code == T_STRING:
        if not PyUnicode_Check(v):
            raise _type_error(s, v)
        if _str_over(v, s.max_bytes):
            raise ArgumentError(f"invalid argument size for {s.qname}, max {s.max_bytes} bytes")
        return v
    if code == T_NUM:
        if not _is_num(v):
            raise _type_error(s, v)
        return v
    if code == T_BOOLEAN:
        if not PyBool_Check(v):
            raise _type_error(s, v)
        return v
    if code == T_UUID:
        if not PyUnicode_Check(v):
            raise _type_error(s, v)
        if not _is_uuid(v):
            raise ArgumentError(f"invalid argument value for {s.qname}, require a UUID format string")
        return v
    if code == T_ANY:
        return v
    if code == T_MAP:
        if not PyDict_Check(v):
            raise _type_error(s, v)
        _check_map(s, v, s.max_items, False)
        return v
    if code == T_DATETIME or code == T_NAIVE_DATETIME:
        return _parse_datetime(s, v)
    # list types
    if not PyList_Check(v):
        raise _type_error(s, v)
    _check_list(s, v)
    return v


# --------------------------------------------------------------------------- compile

cdef Py_ssize_t _positive_int(object value, str what) except -1:
    if PyBool_Check(value) or not PyLong_Check(value) or value <= 0:
        raise ValueError(f"{what} must be a positive int, got {_render(value)}")
    try:
        return value
    except OverflowError:
        raise ValueError(f"{what} is too large: {value}") from None


@cython.final
cdef class Limits:
    """Default size limits (the reference's defaults: 3000 bytes, 1000 items, 1000 entries).

    ``Limits(string_max_bytes: int = 3000, list_max_items: int = 1000, map_max_items: int = 1000)``

    * ``string_max_bytes`` -- default ``max_bytes`` of string, default ``max_item_bytes`` of
      list_string, and the cap on str items of ``list`` and str values of maps;
    * ``list_max_items`` -- default ``max_items`` of the list types;
    * ``map_max_items`` -- default ``max_items`` of map, and the cap on each list_map item.
    """

    def __init__(self, string_max_bytes=3000, list_max_items=1000, map_max_items=1000):
        self.string_max_bytes = _positive_int(string_max_bytes, "string_max_bytes")
        self.list_max_items = _positive_int(list_max_items, "list_max_items")
        self.map_max_items = _positive_int(map_max_items, "map_max_items")

    def __repr__(self):
        return (f"Limits(string_max_bytes={self.string_max_bytes}, "
                f"list_max_items={self.list_max_items}, map_max_items={self.map_max_items})")

    def __eq__(self, other):
        cdef Limits o
        if not isinstance(other, Limits):
            return NotImplemented
        o = other
        return (self.string_max_bytes == o.string_max_bytes
                and self.list_max_items == o.list_max_items
                and self.map_max_items == o.map_max_items)

    def __hash__(self):
        return hash((self.string_max_bytes, self.list_max_items, self.map_max_items))


cdef Limits _DEFAULT_LIMITS = Limits()


@cython.final
cdef class _Spec:
    """One compiled argument spec (internal)."""
    cdef readonly str name
    cdef readonly str type_name
    cdef str qname                    # the name rendered for messages: "name"
    cdef int code                     # T_* type code
    cdef Py_ssize_t pos               # output position
    cdef Py_ssize_t max_bytes         # string
    cdef Py_ssize_t max_items         # list types, map
    cdef Py_ssize_t max_item_bytes    # list_string
    cdef Py_ssize_t string_max        # limits.string_max_bytes (list items / map values)
    cdef Py_ssize_t map_max           # limits.map_max_items (list_map items)
    cdef bint allow_nil
    cdef bint has_default
    cdef object default               # converted default_value
    cdef tuple required               # map: required keys, () if none
    cdef frozenset accept             # map: accepted keys, None if unrestricted

    def __repr__(self):
        return f"<_Spec {self.qname}: {self.type_name}>"


cdef list _str_list(object value, str what):
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{what} must be a list of str, got {_render(value)}")
    out = []
    for item in value:
        if not PyUnicode_Check(item):
            raise ValueError(f"{what} must be a list of str, got item {_render(item)}")
        if item in out:
            raise ValueError(f"{what} lists {_quote(item)} more than once")
        out.append(item)
    return out


cdef _Spec _compile_spec(object name, object raw, Limits limits):
    cdef _Spec s = _Spec.__new__(_Spec)
    cdef str q = _quote(name)
    cdef str where = f"argument {q}"
    cdef dict opts

    # Normalise the three forms to (type name, options dict).
    if PyUnicode_Check(raw):
        type_name = raw
        opts = {}
    elif isinstance(raw, (list, tuple)):
        if len(raw) != 2 or not PyUnicode_Check(raw[0]):
            raise ValueError(f"{where}: tuple form must be [type, limit], got {_render(raw)}")
        type_name = raw[0]
        if type_name not in _TYPE_CODES:
            raise ValueError(f"{where}: unknown type {_quote(type_name)}{_guess_type(type_name)}")
        if type_name not in _TUPLE_OPTION:
            raise ValueError(f"{where}: type {_quote(type_name)} takes no limit (tuple form)")
        opts = {_TUPLE_OPTION[type_name]: raw[1]}
    elif isinstance(raw, dict):
        if "type" not in raw:
            raise ValueError(f"{where}: extended spec needs a \"type\"")
        type_name = raw["type"]
        if not PyUnicode_Check(type_name):
            raise ValueError(f"{where}: type must be a str, got {_render(type_name)}")
        opts = dict(raw)
        del opts["type"]
    else:
        raise ValueError(
            f"{where}: spec must be a type name, a [type, limit] pair or a dict, got {_render(raw)}")

    if type_name not in _TYPE_CODES:
        raise ValueError(f"{where}: unknown type {_quote(type_name)}{_guess_type(type_name)}")
    allowed = _TYPE_OPTIONS.get(type_name, frozenset())
    for opt in opts:
        if opt not in _ALL_OPTIONS:
            raise ValueError(f"{where}: unknown option {_quote(opt)}{_guess(opt, _ALL_OPTIONS)}")
        if opt not in _COMMON_OPTIONS and opt not in allowed:
            owners = ", ".join(_OPTION_OWNERS[opt])
            raise ValueError(
                f"{where}: option {_quote(opt)} is not supported for type {_quote(type_name)} "
                f"(only for {owners})")

    s.name = name
    s.qname = q
    s.type_name = type_name
    s.code = _TYPE_CODES[type_name]
    s.string_max = limits.string_max_bytes
    s.map_max = limits.map_max_items
    s.max_bytes = limits.string_max_bytes
    s.max_item_bytes = limits.string_max_bytes
    s.max_items = limits.map_max_items if s.code == T_MAP else limits.list_max_items
    s.required = ()
    s.accept = None
    if "max_bytes" in opts:
        s.max_bytes = _positive_int(opts["max_bytes"], f"{where}: max_bytes")
    if "max_items" in opts:
        s.max_items = _positive_int(opts["max_items"], f"{where}: max_items")
    if "max_item_bytes" in opts:
        s.max_item_bytes = _positive_int(opts["max_item_bytes"], f"{where}: max_item_bytes")
    if "required" in opts:
        s.required = tuple(_str_list(opts["required"], f"{where}: required"))
    if "accept" in opts:
        accept = _str_list(opts["accept"], f"{where}: accept")
        if accept:   # empty = unrestricted, as in the reference
            s.accept = frozenset(accept)
            not_accepted = [k for k in s.required if k not in s.accept]
            if not_accepted:
                raise ValueError(
                    f"{where}: required keys not in accept: {_render_list(not_accepted)}")

    allow_nil = False
    if "allow_nil" in opts and "allow_nil?" in opts and opts["allow_nil"] is not opts["allow_nil?"]:
        raise ValueError(f"{where}: allow_nil and allow_nil? disagree")
    for key in ("allow_nil", "allow_nil?"):
        if key in opts:
            if not PyBool_Check(opts[key]):
                raise ValueError(f"{where}: {key} must be a bool, got {_render(opts[key])}")
            allow_nil = opts[key]
    s.allow_nil = allow_nil

    s.has_default = False
    s.default = None
    default = opts.get("default_value")
    if default is not None:   # default_value None = no default, as in the reference
        try:
            s.default = _check(s, default)
        except ArgumentError as exc:
            raise ValueError(f"{where}: invalid default_value: {exc}") from None
        s.has_default = True
    return s


@cython.final
cdef class Validator:
    """Compiled argument spec of one function.

    ``Validator(arg_types: dict | None, arg_orders: list[str] | str | None = None,
    request_type: str = "", limits: Limits | None = None)``

    Raises ``ValueError`` (naming the argument and the problem) for a bad spec.
    ``convert(args: dict | None) -> list`` validates a request's args and returns the
    positional arguments; it raises :class:`ArgumentError` on the first problem.
    """

    def __init__(self, arg_types, arg_orders=None, request_type="", limits=None):
        cdef Limits lim
        cdef _Spec s
        cdef Py_ssize_t i
        if limits is None:
            lim = _DEFAULT_LIMITS
        elif isinstance(limits, Limits):
            lim = limits
        else:
            raise ValueError(f"limits must be a Limits, got {_render(limits)}")
        if not PyUnicode_Check(request_type):
            raise ValueError(f"request_type must be a str, got {_render(request_type)}")
        if arg_types is None:
            arg_types = {}
        if not isinstance(arg_types, dict):
            raise ValueError(f"arg_types must be a dict, got {_render(arg_types)}")

        specs = []
        for name, raw in arg_types.items():
            if not PyUnicode_Check(name):
                raise ValueError(f"argument names must be str, got {_render(name)}")
            specs.append(_compile_spec(name, raw, lim))
        names = tuple([(<_Spec>x).name for x in specs])
        n = len(specs)

        if arg_orders is not None and PyUnicode_Check(arg_orders):
            if arg_orders != "map":
                raise ValueError(f"arg_orders must be a list of names or \"map\", got {_render(arg_orders)}")
            mode = MODE_MAP if n else MODE_NONE
            for i in range(n):
                (<_Spec>specs[i]).pos = i
        else:
            if arg_orders is None:
                orders = []
            elif isinstance(arg_orders, (list, tuple)):
                orders = list(arg_orders)
            else:
                raise ValueError(f"arg_orders must be a list of names or \"map\", got {_render(arg_orders)}")
            unknown = [o for o in orders if not (PyUnicode_Check(o) and o in arg_types)]
            if unknown:
                raise ValueError(f"arg_orders names undeclared argument(s): {_render_list(unknown)}")
            seen = set()
            for o in orders:
                if o in seen:
                    raise ValueError(f"arg_orders lists argument {_quote(o)} more than once")
                seen.add(o)
            if n == 0:
                mode = MODE_NONE
            elif n == 1 and not orders:
                mode = MODE_SINGLE
                (<_Spec>specs[0]).pos = 0
            else:
                missing = [x for x in names if x not in seen]
                if missing:
                    raise ValueError(f"arg_orders is missing argument(s): {_render_list(missing)}")
                mode = MODE_ORDERED
                where = {o: i for i, o in enumerate(orders)}
                for s in specs:
                    s.pos = where[s.name]

        self._specs = tuple(specs)
        self._names = names
        self._declared = frozenset(names)
        self._qrequest_type = _quote(request_type)
        self._n = n
        self._mode = mode

    @property
    def names(self):
        """Declared argument names, in declaration order (``tuple[str, ...]``)."""
        return self._names

    def __repr__(self):
        mode = ("none", "map", "single", "ordered")[self._mode]
        return f"<Validator {self._qrequest_type} args={list(self._names)!r} mode={mode}>"

    cdef object _extra_error(self, object args):
        extras = [k for k in args if not (PyUnicode_Check(k) and k in self._declared)]
        extras.sort(key=_sort_key)
        return ArgumentError(
            f"extra arguments for {self._qrequest_type}, extra: {_render_list(extras)}")

    cpdef list convert(self, object args):
        """Validate ``args`` (``dict | None``) and return the positional argument list.

        Raises :class:`ArgumentError` with the client-facing message on the first problem.
        """
        cdef Py_ssize_t n = self._n
        cdef Py_ssize_t nargs
        cdef Py_ssize_t present = 0
        cdef Py_ssize_t i
        cdef PyObject* stack_slots[STACK_SLOTS]
        cdef PyObject** found = stack_slots
        cdef PyObject* p
        cdef _Spec s
        cdef list result
        cdef dict as_map
        cdef tuple specs = self._specs
        cdef int mode = self._mode

        if args is None:
            nargs = 0
        elif PyDict_Check(args):
            nargs = PyDict_Size(args)
        else:
            raise ArgumentError(
                f"invalid arguments for {self._qrequest_type}, expected a map, got {_render(args)}")

        if n == 0:
            if nargs:
                raise self._extra_error(args)
            return []

        if n > STACK_SLOTS:
            found = <PyObject**>PyMem_Malloc(n * sizeof(PyObject*))
            if found == NULL:
                raise MemoryError()
        try:
            # Pass 1: look every declared name up once; undeclared keys exist iff fewer
            # declared names were found than args has keys.
            for i in range(n):
                if nargs:
                    p = PyDict_GetItemWithError(args, (<_Spec>specs[i]).name)
                    if p != NULL:
                        present += 1
                    found[i] = p
                else:
                    found[i] = NULL
            if present < nargs:
                raise self._extra_error(args)

            # Pass 2: validate/convert in declaration order.
            if mode == MODE_ORDERED:
                result = PyList_New(n)
            elif mode == MODE_MAP:
                as_map = {}
            for i in range(n):
                s = <_Spec>specs[i]
                p = found[i]
                if p == NULL:
                    if s.has_default:
                        v = s.default
                    elif s.allow_nil:
                        v = None
                    else:
                        raise ArgumentError(
                            f"missing argument {s.qname} in {self._qrequest_type}")
                else:
                    v = <object>p
                    if v is None:
                        if not s.allow_nil:
                            raise ArgumentError(f"nil value not accepted for argument {s.qname}")
                    else:
                        v = _check(s, v)
                if mode == MODE_ORDERED:
                    Py_INCREF(v)
                    PyList_SET_ITEM(result, s.pos, v)
                elif mode == MODE_MAP:
                    PyDict_SetItem(as_map, s.name, v)
                else:
                    return [v]
            if mode == MODE_MAP:
                return [as_map]
            return result
        finally:
            if found != stack_slots:
                PyMem_Free(found)
