"""Mapping what main returned to plain JSON values.

numpy scalars become Python numbers, numpy arrays nested lists, tuples
lists. NaN and +/-Infinity (float or numpy) become None, i.e. JSON null, the
same choice as JavaScript's JSON.stringify. Dict keys must be str, int,
float, bool or None and are turned into strings as json.dumps does.
Anything else raises NotSerializable naming where it was found.
"""

import math
import sys

MAX_DEPTH = 500


class NotSerializable(Exception):
    def __init__(self, path, what):
        super().__init__("%s: %s" % (path or "result", what))


def to_json_value(value, path="", depth=0, _seen=None):
    """Return value as plain JSON values (dict, list, str, int, float, bool, None)."""
    if depth > MAX_DEPTH:
        raise NotSerializable(path, "nested more than %d levels deep" % MAX_DEPTH)
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None

    np = sys.modules.get("numpy")
    if np is not None:
        if isinstance(value, np.generic):
            if isinstance(value, (np.bool_, np.integer, np.floating)):
                return to_json_value(value.item(), path, depth + 1, _seen)
            if isinstance(value, np.str_):
                return str(value)
            raise NotSerializable(path, "numpy scalar of type %s cannot be JSON" % value.dtype)
        if isinstance(value, np.ndarray):
            if value.dtype.kind not in "biuf":
                raise NotSerializable(path, "numpy array of dtype %s cannot be JSON" % value.dtype)
            return to_json_value(value.tolist(), path, depth + 1, _seen)

    if isinstance(value, (list, tuple, dict)):
        seen = _seen if _seen is not None else set()
        if id(value) in seen:
            raise NotSerializable(path, "circular reference")
        seen.add(id(value))
        try:
            if isinstance(value, dict):
                out = {}
                for key, item in value.items():
                    out[_json_key(key, path)] = to_json_value(item, "%s[%r]" % (path or "result", key), depth + 1, seen)
                return out
            return [to_json_value(item, "%s[%d]" % (path or "result", i), depth + 1, seen) for i, item in enumerate(value)]
        finally:
            seen.discard(id(value))
    raise NotSerializable(path, "object of type %s cannot be JSON" % type(value).__name__)


def _json_key(key, path):
    if isinstance(key, str):
        return key
    if key is None:
        return "null"
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, (int, float)):
        return str(key)
    raise NotSerializable(path, "dict key of type %s cannot be JSON" % type(key).__name__)


def encode(value):
    """Return the compact UTF-8 JSON text of what main returned.

    Strings must be valid Unicode: a lone surrogate cannot be UTF-8, so it is
    NotSerializable rather than a broken reply.
    """
    import json

    text = json.dumps(to_json_value(value), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise NotSerializable("", "a string holds a lone surrogate (%s), which is not valid Unicode" % exc.reason)
