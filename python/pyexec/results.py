"""Mapping what main returned to plain JSON values: the one documented mapping.

* None, bool, int, str: as they are; float: as it is, NaN and +/-Infinity
  become null (JavaScript's JSON.stringify does the same).
* numpy scalars: the Python number; numpy arrays: nested lists of their
  elements, each mapped by these rules (datetime64 and timedelta64 too).
* list, tuple: lists; set, frozenset: lists, sorted when the elements sort.
* dict: objects; keys that are str, int, float, bool or None become strings
  as json.dumps makes them; dates as keys become ISO 8601 strings. Two keys
  of one dict that become the same string (1 and "1", True and "true")
  raise NotSerializable: an object holds one value a key, and which one
  would be left is no caller's guess.
* pandas DataFrame: a list of records, one object per row, keyed by column
  name (what df.to_dict("records") gives; the orientation most callers load
  straight into a table). Series: a list of its values when its index is
  the default 0..n-1, else an object from index label to value. Index: a
  list. Categorical: a list of its values.
* datetime, date, time, pandas Timestamp, numpy datetime64: ISO 8601
  (2024-01-31T12:00:00, with the offset when it has one); timedelta,
  pandas Timedelta, numpy timedelta64: ISO 8601 durations (P1DT2H0M0S);
  pandas Period: its string (2024-01).
* NaN, None, pandas NaT and NA: null.
* Decimal: a string, exactly as Decimal prints it (a float would round);
  UUID: its string; bytes, bytearray: base64.
* Anything else raises NotSerializable naming where it was found, its type,
  and the conversion to use.
"""

import math
import sys

MAX_DEPTH = 500

HINT = ("return plain values instead: str(x), float(x), x.tolist() for arrays, "
        "df.to_dict('records') for frames")


class NotSerializable(Exception):
    def __init__(self, path, what):
        super().__init__("%s: %s" % (path or "result", what))


def _iso_duration(seconds_total, text=None):
    """ISO 8601 duration of a number of seconds (negative allowed)."""
    sign = "-" if seconds_total < 0 else ""
    seconds_total = abs(seconds_total)
    days, rest = divmod(seconds_total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    secs = ("%.6f" % seconds).rstrip("0").rstrip(".")
    return "%sP%dDT%dH%dM%sS" % (sign, days, hours, minutes, secs or "0")


def _special(value, path, depth, seen):
    """The JSON value of the types beyond plain Python; NotImplemented if
    value is none of them."""
    import base64
    import datetime
    import decimal
    import uuid

    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        pd = sys.modules.get("pandas")
        if pd is not None and value is pd.NaT:
            return None
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        pd = sys.modules.get("pandas")
        if pd is not None and value is pd.NaT:
            return None
        return _iso_duration(value.total_seconds())
    if isinstance(value, decimal.Decimal):
        return None if value.is_nan() else str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (set, frozenset)):
        items = list(value)
        try:
            items.sort()
        except TypeError:
            pass
        return to_json_value(items, path, depth + 1, seen)

    np = sys.modules.get("numpy")
    if np is not None:
        if isinstance(value, np.datetime64):
            if np.isnat(value):
                return None
            return str(np.datetime_as_string(value))
        if isinstance(value, np.timedelta64):
            if np.isnat(value):
                return None
            return _iso_duration(value / np.timedelta64(1, "us") / 1e6)
        if isinstance(value, np.generic):
            if isinstance(value, (np.bool_, np.integer, np.floating)):
                return to_json_value(value.item(), path, depth + 1, seen)
            if isinstance(value, np.str_):
                return str(value)
            if isinstance(value, np.bytes_):
                return _special(bytes(value), path, depth, seen)
            raise NotSerializable(path, "numpy scalar of type %s cannot be JSON; %s" % (value.dtype, HINT))
        if isinstance(value, np.ndarray):
            if value.dtype.kind in "biuf":
                return to_json_value(value.tolist(), path, depth + 1, seen)
            if value.dtype.kind in "MmOUSc":
                if value.ndim == 0:
                    return to_json_value(value[()], path, depth + 1, seen)
                return [to_json_value(item, "%s[%d]" % (path or "result", i), depth + 1, seen)
                        for i, item in enumerate(value)]
            raise NotSerializable(path, "numpy array of dtype %s cannot be JSON; %s" % (value.dtype, HINT))

    pd = sys.modules.get("pandas")
    if pd is not None:
        if value is pd.NaT or value is pd.NA:
            return None
        if isinstance(value, pd.DataFrame):
            columns = [_json_key(c, path) for c in value.columns]
            if len(set(columns)) != len(columns):
                raise NotSerializable(path, "DataFrame has duplicate column names %r; rename them first" % (columns,))
            rows = []
            for i, row in enumerate(value.itertuples(index=False, name=None)):
                row_path = "%s[%d]" % (path or "result", i)
                rows.append({col: to_json_value(cell, "%s[%r]" % (row_path, col), depth + 2, seen)
                             for col, cell in zip(columns, row)})
            return rows
        if isinstance(value, pd.Series):
            if isinstance(value.index, pd.RangeIndex) and value.index.start == 0 and value.index.step == 1:
                return to_json_value(value.astype(object).tolist(), path, depth + 1, seen)
            out = {}
            for label, item in zip(value.index, value.astype(object).tolist()):
                key = _object_key(label, out, value.index, path, "index labels")
                out[key] = to_json_value(item, "%s[%r]" % (path or "result", key), depth + 1, seen)
            return out
        if isinstance(value, pd.Index):
            return to_json_value(value.astype(object).tolist(), path, depth + 1, seen)
        if isinstance(value, pd.Categorical):
            return to_json_value(list(value), path, depth + 1, seen)
        if isinstance(value, pd.Timedelta):
            return _iso_duration(value.total_seconds())
        if isinstance(value, pd.Period):
            return str(value)
        if isinstance(value, pd.Interval):
            return str(value)
    return NotImplemented


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

    if isinstance(value, (list, tuple, dict)):
        seen = _seen if _seen is not None else set()
        if id(value) in seen:
            raise NotSerializable(path, "circular reference")
        seen.add(id(value))
        try:
            if isinstance(value, dict):
                out = {}
                for key, item in value.items():
                    out[_object_key(key, out, value, path)] = to_json_value(
                        item, "%s[%r]" % (path or "result", key), depth + 1, seen)
                return out
            return [to_json_value(item, "%s[%d]" % (path or "result", i), depth + 1, seen) for i, item in enumerate(value)]
        finally:
            seen.discard(id(value))
    mapped = _special(value, path, depth, _seen)
    if mapped is not NotImplemented:
        return mapped
    raise NotSerializable(path, "object of type %s cannot be JSON; %s" % (type(value).__name__, HINT))


def _json_key(key, path):
    import datetime

    if isinstance(key, str):
        return key
    if isinstance(key, (datetime.datetime, datetime.date, datetime.time)):
        return key.isoformat()
    if key is None:
        return "null"
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, (int, float)):
        return str(key)
    raise NotSerializable(path, "dict key of type %s cannot be JSON" % type(key).__name__)


def _object_key(key, out, keys, path, what="dict keys"):
    """The JSON key of key, one of keys, refused if it is already in out:
    an earlier key of keys became the same string."""
    json_key = _json_key(key, path)
    if json_key in out:
        # Found again only on failure, so that the mapping keeps no second
        # table of every dict's keys.
        earlier = next(k for k in keys if _json_key(k, path) == json_key)
        raise NotSerializable(path, "%s %r and %r both become the JSON key %s; "
                              "rename one, or convert the keys yourself"
                              % (what, earlier, key, _quote(json_key)))
    return json_key


def _quote(text):
    import json

    return json.dumps(text, ensure_ascii=False)


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
