"""Mapping what main returned to plain JSON values: the one documented mapping.

* None, bool, int, str: as they are; float: as it is, NaN and +/-Infinity
  become null (JavaScript's JSON.stringify does the same).
* numpy scalars: the Python number; numpy arrays: nested lists of their
  elements, each mapped by these rules (datetime64 and timedelta64 too).
* list, tuple: lists; set, frozenset: lists, sorted when the elements sort.
* dict: objects; keys are labels (below). Two keys of one dict that become
  the same string (1 and "1", True and "true") raise NotSerializable: an
  object holds one value a key, and which one would be left is no caller's
  guess.
* Labels (dict keys, index labels, column names) become strings: str as it
  is; int, float, bool as json.dumps writes them (1, 1.5, true); None, NaN,
  NaT and NA "null"; any other scalar by these rules (dates ISO 8601,
  Period "2024-01", Interval "(0, 10]", numpy scalars their number). A
  tuple label (a MultiIndex's, or a tuple column name) is its parts joined
  with "|", trailing empty parts dropped (("region", "") -> "region", what
  reset_index on MultiIndex columns leaves); a part holding "|" raises
  NotSerializable, so that splitting on "|" always gives the parts back.
* pandas DataFrame: a list of records, one object per row, keyed by column
  name (what df.to_dict("records") gives; the orientation most callers load
  straight into a table). Its index comes first in each record, one key a
  level, unless it is the default: unnamed and 0..n-1 in order (a
  RangeIndex, or integers equal to one), which only repeats the rows'
  positions. A level's key is its name; an unnamed index of one level is
  "index" ("level_0" when a column is already "index"), the unnamed levels
  of a MultiIndex "level_0", "level_1"... (the names df.reset_index()
  gives). A level and a column with one key raise NotSerializable.
* pandas Series: a list of its values when its index is the default (as
  above), else an object from index label to value when the index has one
  level; a Series with a MultiIndex is records like a DataFrame's, its
  levels then its values under the Series' name ("value" when unnamed).
  Index: a list. Categorical and the other extension arrays (nullable
  Int64, Float64, boolean, string, Arrow-backed): a list of their values,
  pd.NA as null.
* datetime, date, time, pandas Timestamp, numpy datetime64: ISO 8601
  (2024-01-31T12:00:00, with the offset when it has one); timedelta,
  pandas Timedelta, numpy timedelta64: ISO 8601 durations (P1DT2H0M0S);
  pandas Period and Interval: their string (2024-01, (0, 10]).
* NaN, None, pandas NaT and NA: null.
* Decimal: a string, exactly as Decimal prints it (a float would round);
  UUID: its string; bytes, bytearray: base64 in JSON, bin in msgpack
  (encode_msgpack).
* Anything else raises NotSerializable naming where it was found, its type,
  and the conversion to use.
"""

import math
import sys

MAX_DEPTH = 500

HINT = ("return plain values instead: str(x), float(x), x.tolist() for arrays, "
        "df.to_dict('records') for frames")

# LEVEL_SEPARATOR joins the parts of a tuple label (MultiIndex columns).
LEVEL_SEPARATOR = "|"
# SERIES_VALUE_KEY names the values of an unnamed Series with a MultiIndex.
SERIES_VALUE_KEY = "value"


class NotSerializable(Exception):
    def __init__(self, path, what):
        super().__init__("%s: %s" % (path or "result", what))


class _Walk:
    """The state of one mapping: the containers being mapped (to refuse a
    circular reference) and whether bytes stay bytes (for msgpack)."""

    __slots__ = ("seen", "keep_bytes")

    def __init__(self, keep_bytes=False):
        self.seen = set()
        self.keep_bytes = keep_bytes


def _iso_duration(seconds_total, text=None):
    """ISO 8601 duration of a number of seconds (negative allowed)."""
    sign = "-" if seconds_total < 0 else ""
    seconds_total = abs(seconds_total)
    days, rest = divmod(seconds_total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    secs = ("%.6f" % seconds).rstrip("0").rstrip(".")
    return "%sP%dDT%dH%dM%sS" % (sign, days, hours, minutes, secs or "0")


def _is_default_index(pd, index):
    """Whether index says nothing but the rows' positions: unnamed, one
    level, 0..n-1 in order."""
    if index.nlevels != 1 or index.name is not None:
        return False
    if isinstance(index, pd.RangeIndex):
        return index.start == 0 and index.step == 1
    if index.dtype.kind not in "iu":
        return False
    np = sys.modules["numpy"]
    return bool((index.to_numpy() == np.arange(len(index))).all())


def _level_keys(index, columns, path):
    """The record keys of index's levels, by the rules of reset_index."""
    if index.nlevels == 1:
        name = index.name
        if name is None:
            return ["level_0" if "index" in columns else "index"]
        return [_json_key(name, path)]
    return [("level_%d" % i) if name is None else _json_key(name, path) for i, name in enumerate(index.names)]


def _records(pd, frame, value_keys, path, depth, walk):
    """The records of frame (a DataFrame, or a Series with value_keys
    [its key]): its index levels first unless the index is the default."""
    index = frame.index
    lead = [] if _is_default_index(pd, index) else _level_keys(index, value_keys, path)
    keys = lead + value_keys
    if len(set(keys)) != len(keys):
        seen = set()
        twice = next(k for k in keys if k in seen or seen.add(k))
        if twice in lead:
            raise NotSerializable(path, "index level and column both named %s; rename one, or drop the index "
                                  "with df.reset_index(drop=True)" % _quote(twice))
        raise NotSerializable(path, "DataFrame has duplicate column names %r; rename them first" % (keys,))
    if isinstance(frame, pd.Series):
        rows = zip(index, frame.astype(object).tolist())
    else:
        rows = frame.itertuples(index=bool(lead), name=None)
    multi = index.nlevels > 1
    out = []
    for i, row in enumerate(rows):
        if lead:
            cells = (row[0] if multi else (row[0],)) + tuple(row[1:])
        else:
            cells = row
        row_path = "%s[%d]" % (path or "result", i)
        out.append({key: _map(cell, "%s[%r]" % (row_path, key), depth + 2, walk) for key, cell in zip(keys, cells)})
    return out


def _special(value, path, depth, walk):
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
        if walk.keep_bytes:
            return bytes(value)
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (set, frozenset)):
        items = list(value)
        try:
            items.sort()
        except TypeError:
            pass
        return _map(items, path, depth + 1, walk)

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
                return _map(value.item(), path, depth + 1, walk)
            if isinstance(value, np.str_):
                return str(value)
            if isinstance(value, np.bytes_):
                return _special(bytes(value), path, depth, walk)
            raise NotSerializable(path, "numpy scalar of type %s cannot be JSON; %s" % (value.dtype, HINT))
        if isinstance(value, np.ndarray):
            if value.dtype.kind in "biuf":
                return _map(value.tolist(), path, depth + 1, walk)
            if value.dtype.kind in "MmOUSc":
                if value.ndim == 0:
                    return _map(value[()], path, depth + 1, walk)
                return [_map(item, "%s[%d]" % (path or "result", i), depth + 1, walk)
                        for i, item in enumerate(value)]
            raise NotSerializable(path, "numpy array of dtype %s cannot be JSON; %s" % (value.dtype, HINT))

    pd = sys.modules.get("pandas")
    if pd is not None:
        if value is pd.NaT or value is pd.NA:
            return None
        if isinstance(value, pd.DataFrame):
            return _records(pd, value, [_json_key(c, path) for c in value.columns], path, depth, walk)
        if isinstance(value, pd.Series):
            if _is_default_index(pd, value.index):
                return _map(value.astype(object).tolist(), path, depth + 1, walk)
            if value.index.nlevels > 1:
                name = SERIES_VALUE_KEY if value.name is None else _json_key(value.name, path)
                return _records(pd, value, [name], path, depth, walk)
            out = {}
            for label, item in zip(value.index, value.astype(object).tolist()):
                key = _object_key(label, out, value.index, path, "index labels")
                out[key] = _map(item, "%s[%r]" % (path or "result", key), depth + 1, walk)
            return out
        if isinstance(value, pd.Index):
            return _map(value.astype(object).tolist(), path, depth + 1, walk)
        if isinstance(value, pd.api.extensions.ExtensionArray):
            # Categorical and the nullable, string and Arrow-backed arrays
            # (pd.array(..., dtype="Int64")): their missing values are
            # pd.NA (or NaN, NaT), each mapped to null.
            return _map(list(value), path, depth + 1, walk)
        if isinstance(value, pd.Timedelta):
            return _iso_duration(value.total_seconds())
        if isinstance(value, pd.Period):
            return str(value)
        if isinstance(value, pd.Interval):
            return str(value)
    return NotImplemented


def to_json_value(value, path="", depth=0, _walk=None):
    """Return value as plain JSON values (dict, list, str, int, float, bool, None)."""
    return _map(value, path, depth, _walk if _walk is not None else _Walk())


# msgpack's integers: what is outside them travels as its decimal text,
# as the JSON answer's reader would have to take it too.
_MSGPACK_MIN_INT, _MSGPACK_MAX_INT = -(1 << 63), (1 << 64) - 1


def _map(value, path, depth, walk):
    if depth > MAX_DEPTH:
        raise NotSerializable(path, "nested more than %d levels deep" % MAX_DEPTH)
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        if walk.keep_bytes and not _MSGPACK_MIN_INT <= value <= _MSGPACK_MAX_INT:
            return str(value)
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None

    if isinstance(value, (list, tuple, dict)):
        seen = walk.seen
        if id(value) in seen:
            raise NotSerializable(path, "circular reference")
        seen.add(id(value))
        try:
            if isinstance(value, dict):
                out = {}
                for key, item in value.items():
                    out[_object_key(key, out, value, path)] = _map(
                        item, "%s[%r]" % (path or "result", key), depth + 1, walk)
                return out
            return [_map(item, "%s[%d]" % (path or "result", i), depth + 1, walk) for i, item in enumerate(value)]
        finally:
            seen.discard(id(value))
    mapped = _special(value, path, depth, walk)
    if mapped is not NotImplemented:
        return mapped
    raise NotSerializable(path, "object of type %s cannot be JSON; %s" % (type(value).__name__, HINT))


def _json_key(key, path):
    """The string a label becomes (see the module's docstring)."""
    if isinstance(key, str):
        return key
    if key is None:
        return "null"
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, float) and math.isnan(key):
        return "null"
    if isinstance(key, (int, float)):
        return str(key)
    if isinstance(key, tuple):
        parts = [_json_key(part, path) for part in key]
        while len(parts) > 1 and parts[-1] == "":
            parts.pop()
        for part in parts:
            if LEVEL_SEPARATOR in part and len(parts) > 1:
                raise NotSerializable(path, "the label %r has a part holding %s, the separator of a tuple "
                                      "label's parts; rename it, or flatten the labels yourself"
                                      % (key, _quote(LEVEL_SEPARATOR)))
        return LEVEL_SEPARATOR.join(parts)
    try:
        mapped = to_json_value(key, path)
    except NotSerializable:
        mapped = NotImplemented
    if mapped is None:
        return "null"
    if isinstance(mapped, (str, int, float, bool)):
        return _json_key(mapped, path)
    raise NotSerializable(path, "a key or label of type %s cannot be JSON" % type(key).__name__)


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


def encode_msgpack(msgpack, value):
    """Return the msgpack bytes of what main returned, for a caller that
    asked in msgpack: the same values as encode's JSON, except that bytes
    are bin rather than base64 text. An integer msgpack cannot hold (beyond
    int64 and uint64) is its decimal text."""
    mapped = _map(value, "", 0, _Walk(keep_bytes=True))
    try:
        return msgpack.packb(mapped, use_bin_type=True)
    except UnicodeEncodeError as exc:
        raise NotSerializable("", "a string holds a lone surrogate (%s), which is not valid Unicode" % exc.reason)


def encoder(msgpack, result_format):
    """The encoding function of an execute message's result_format."""
    if result_format == "msgpack":
        return lambda value: encode_msgpack(msgpack, value)
    return encode
