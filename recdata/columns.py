"""Turning raw source columns into the contract columns of ``recdata.schema``.

Every loader (MovieLens, GroupLens layouts, Parquet/CSV) reads files with ``read_table`` and converts
columns with the functions here, so a bad file gets the same kind of message everywhere: the file,
the column, what was found (counts, example values, row numbers) and how to fix it.

Row numbers in messages are 0-based data rows (the header is not counted).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from recdata.schema import FeatureSpec, ids_to_str

#: Timestamp formats understood by ``to_epoch_seconds`` besides strftime patterns (which contain "%").
TIMESTAMP_UNITS = {"seconds": 1, "milliseconds": 10**3, "microseconds": 10**6, "nanoseconds": 10**9}
TIMESTAMP_FORMATS = (*TIMESTAMP_UNITS, "iso")
_INT64_LOW, _INT64_HIGH = -2.0**63, 2.0**63  # int64 holds [-2**63, 2**63); both bounds are exact floats


def read_table(path: str | os.PathLike, fmt: str = "auto", delimiter: str = ",",
               encoding: str = "utf-8", what: str = "table") -> pd.DataFrame:
    """Read a Parquet or CSV file into a DataFrame.

    CSV columns are read as strings (so ids such as zip codes keep leading zeros) with empty fields
    as missing; conversion to numbers happens explicitly per column. ``fmt`` is "parquet", "csv" or
    "auto" (by extension: .parquet/.pq → Parquet, anything else → CSV). ``what`` names the table in
    error messages ("interactions", "items", ...).
    """
    path = Path(path)
    if not path.is_file():
        hint = f"; the directory holds {sorted(p.name for p in path.parent.iterdir())[:20]}" \
            if path.parent.is_dir() else f"; the directory {path.parent} does not exist either"
        raise FileNotFoundError(f"{what} file {path} does not exist{hint}. Fix the path")
    if fmt == "auto":
        fmt = "parquet" if path.suffix.lower() in (".parquet", ".pq") else "csv"
    if fmt == "parquet":
        try:
            df = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for corrupt files
            raise ValueError(f"{what} file {path} is not readable as Parquet: {exc}") from exc
    elif fmt == "csv":
        try:
            df = pd.read_csv(path, sep=delimiter, dtype=str, encoding=encoding, keep_default_na=False,
                             na_values=[""])
        except pd.errors.EmptyDataError:
            raise ValueError(f"{what} file {path} is empty (not even a header row); "
                             "write the header and rows, or point at the right file") from None
        except UnicodeDecodeError as exc:
            raise ValueError(f"{what} file {path} is not {encoding} text ({exc}); set the encoding "
                             "(e.g. latin-1) in the schema") from None
        except pd.errors.ParserError as exc:
            raise ValueError(f"{what} file {path} is not valid CSV with delimiter {delimiter!r}: {exc}; "
                             "check the delimiter in the schema") from None
    else:
        raise ValueError(f"{what} file {path}: format {fmt!r} is not one of ['auto', 'parquet', 'csv']")
    if len(df) == 0:
        raise ValueError(f"{what} file {path} has a header {list(df.columns)} but no rows; "
                         "it must hold at least one row")
    return df


def require_columns(df: pd.DataFrame, columns: Sequence[str], where: str, fix: str = "") -> None:
    """Raise ``ValueError`` naming the missing columns, the columns present and ``fix``."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(
            f"{where}: missing column(s) {missing}; the file has {list(df.columns)}. "
            + (fix or "Rename the columns or fix the schema that names them")
        )


def ids(values, where: str) -> pd.Series:
    """Source ids (int or str) as strings; missing ids raise with their row numbers."""
    s = pd.Series(values).reset_index(drop=True)
    missing = s.isna()
    textual = pd.api.types.is_string_dtype(s) or s.dtype == object
    if textual:
        s = s.astype(str).str.strip()
        missing = missing | (s == "")
    if missing.any():
        rows = np.flatnonzero(missing.to_numpy())[:5].tolist()
        raise ValueError(f"{where}: {int(missing.sum())} missing id(s) (rows {rows}); "
                         "drop those rows or fill the ids")
    return s.astype("str") if textual else ids_to_str(s).astype("str")


def unique_in_order(values: pd.Series) -> pd.Series:
    """Distinct values in order of first appearance (Arrow's hash kernel for strings; pandas otherwise)."""
    if pd.api.types.is_string_dtype(values):
        import pyarrow as pa
        import pyarrow.compute as pc
        try:
            return pd.Series(pc.unique(pa.array(values)), dtype=values.dtype)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass
    return values.drop_duplicates().reset_index(drop=True)


def check_unique(values: pd.Series, where: str) -> None:
    """Raise ``ValueError`` if ``values`` (an id column) holds duplicates, naming examples."""
    dup = values.duplicated(keep=False)
    if dup.any():
        ex = list(dict.fromkeys(values[dup].tolist()))[:5]
        rows = np.flatnonzero(dup.to_numpy())[:6].tolist()
        raise ValueError(
            f"{where}: {int(dup.sum())} rows share an id (e.g. {ex} at rows {rows}); ids must be unique. "
            "Deduplicate the table (keep one row per id)"
        )


def to_epoch_seconds(values, fmt: str, where: str) -> np.ndarray:
    """Timestamps as int64 seconds since the epoch.

    ``fmt``: "seconds" | "milliseconds" | "microseconds" | "nanoseconds" (numbers, fractions are
    floored), "iso" (ISO-8601 strings, naive = UTC) or a strftime pattern such as "%Y-%m-%d %H:%M".
    Datetime-typed columns (e.g. Parquet timestamps) are converted whatever ``fmt`` says.
    Missing or unparsable values raise ``ValueError`` with counts, rows and examples.
    """
    s = pd.Series(values).reset_index(drop=True)
    missing = s.isna()
    if pd.api.types.is_string_dtype(s) or s.dtype == object:
        missing = missing | (s.astype(str).str.strip() == "")
    if missing.any():
        rows = np.flatnonzero(missing.to_numpy())[:5].tolist()
        raise ValueError(f"{where}: {int(missing.sum())} missing timestamp(s) of {len(s)} (rows {rows}); "
                         "fill them or drop those rows before loading")
    if pd.api.types.is_datetime64_any_dtype(s):
        return _datetimes_to_seconds(s)
    if fmt in TIMESTAMP_UNITS:
        if pd.api.types.is_bool_dtype(s):
            raise ValueError(f"{where}: timestamps are booleans; point the schema at the time column")
        arr = _numbers(s)
        bad = np.isnan(arr) if arr.dtype.kind == "f" else np.zeros(len(arr), dtype=bool)
        if bad.any():
            rows = np.flatnonzero(bad)[:5].tolist()
            ex = s[bad].iloc[:3].tolist()
            raise ValueError(
                f"{where}: {int(bad.sum())} timestamp(s) are not numbers in {fmt} (e.g. {ex} at rows {rows}); "
                "fix those rows, or set timestamp_format to 'iso' or a strftime pattern if the column "
                "holds dates"
            )
        unit = TIMESTAMP_UNITS[fmt]
        if np.issubdtype(arr.dtype, np.integer):
            return np.floor_divide(arr.astype(np.int64), unit)
        infinite = np.isinf(arr)
        if infinite.any():
            rows = np.flatnonzero(infinite)[:5].tolist()
            raise ValueError(f"{where}: timestamps hold infinite values ({int(infinite.sum())} at rows {rows}); "
                             "fix those rows")
        seconds = np.floor(arr / unit)
        beyond = (seconds < _INT64_LOW) | (seconds >= _INT64_HIGH)  # would wrap to -2**63 in the cast
        if beyond.any():
            rows = np.flatnonzero(beyond)[:5].tolist()
            ex = s[beyond].iloc[:3].tolist()
            raise ValueError(
                f"{where}: {int(beyond.sum())} timestamp(s) in {fmt} are beyond the int64 range of seconds "
                f"(e.g. {ex} at rows {rows}); fix those rows, or check timestamp_format (the column may hold "
                "another unit)"
            )
        return seconds.astype(np.int64)
    if fmt == "iso" or "%" in fmt:
        try:
            dt = pd.to_datetime(s.astype(str), format="ISO8601" if fmt == "iso" else fmt,
                                errors="coerce", utc=True)
        except ValueError as exc:
            raise ValueError(f"{where}: timestamp format {fmt!r} is not usable: {exc}") from None
        bad = dt.isna()
        if bad.any():
            rows = np.flatnonzero(bad.to_numpy())[:5].tolist()
            ex = s[bad].iloc[:3].tolist()
            raise ValueError(
                f"{where}: {int(bad.sum())} timestamp(s) do not parse with format {fmt!r} "
                f"(e.g. {ex} at rows {rows}); fix those rows or the timestamp_format in the schema"
            )
        return _datetimes_to_seconds(dt)
    raise ValueError(
        f"{where}: timestamp_format {fmt!r} is not one of {list(TIMESTAMP_FORMATS)} and is not a "
        "strftime pattern (which contains '%', e.g. '%Y-%m-%d %H:%M:%S')"
    )


def _datetimes_to_seconds(s: pd.Series) -> np.ndarray:
    if getattr(s.dt, "tz", None) is not None:
        s = s.dt.tz_convert("UTC").dt.tz_localize(None)
    return s.to_numpy().astype("datetime64[s]").astype(np.int64)


def to_float(values, where: str, strict: bool = True) -> np.ndarray:
    """Numbers as float64 with NaN for missing values.

    With ``strict`` a non-empty value that is not a number raises ``ValueError`` (the column is
    probably categorical); otherwise such values become NaN.
    """
    s = pd.Series(values).reset_index(drop=True)
    if pd.api.types.is_bool_dtype(s):
        return s.astype(np.float64).to_numpy()
    num = _numbers(s).astype(np.float64)
    if strict:
        given = s.notna().to_numpy().copy()
        if pd.api.types.is_string_dtype(s) or s.dtype == object:
            given &= (s.astype(str).str.strip() != "").to_numpy()
        bad = given & np.isnan(num)
        if bad.any():
            rows = np.flatnonzero(bad)[:5].tolist()
            ex = s[bad].iloc[:3].tolist()
            raise ValueError(
                f"{where}: {int(bad.sum())} value(s) are not numbers (e.g. {ex} at rows {rows}); "
                "declare the feature with kind 'categorical' or clean those values"
            )
    return num


def _numbers(s: pd.Series) -> np.ndarray:
    """Numbers of ``s`` as int64 (if all are integers, exactly) or float64 with NaN for missing/unparsable.

    Strings go through Arrow's casts (fast); only if those fail does pandas parse value by value.
    """
    if pd.api.types.is_bool_dtype(s):
        return s.to_numpy(dtype=np.float64)
    if pd.api.types.is_integer_dtype(s) and not s.isna().any():
        if pd.api.types.is_unsigned_integer_dtype(s) and len(s) and int(s.max()) > np.iinfo(np.int64).max:
            return s.to_numpy(dtype=np.float64)  # would wrap in int64; as floats the range check sees them
        return s.to_numpy(dtype=np.int64)
    if pd.api.types.is_numeric_dtype(s):
        return s.to_numpy(dtype=np.float64, na_value=np.nan)
    if pd.api.types.is_string_dtype(s):
        import pyarrow as pa
        present = s.notna().to_numpy().copy()
        text = s[present].astype(str).str.strip()
        present[present] = (text != "").to_numpy()
        arr = pa.array(text[text != ""])
        casts = ((pa.int64(), np.int64), (pa.float64(), np.float64)) if present.all() else ((pa.float64(), np.float64),)
        for typ, dtype in casts:
            try:
                values = np.array(arr.cast(typ), dtype=dtype)   # a writable copy
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                continue
            if present.all():
                return values
            out = np.full(len(s), np.nan)
            out[present] = values
            return out
    return pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def duplicate_rows(df: pd.DataFrame) -> tuple[int, list[int]]:
    """``(count, rows)``: how many rows repeat an earlier row exactly (every column equal) and the first
    few of them (0-based). Duplicates are reported by the data stage, not refused: repeated events
    can be real (the same item bought twice within a second)."""
    dup = df.duplicated(keep="first").to_numpy()
    return int(dup.sum()), np.flatnonzero(dup)[:5].tolist()


def to_categorical(values) -> pd.Series:
    """Category values as str, missing → "" (integral floats lose their ".0")."""
    s = pd.Series(values).reset_index(drop=True)
    missing = s.isna().to_numpy()
    out = ids_to_str(s).str.strip()
    out[missing] = ""
    return out


def to_text(values) -> pd.Series:
    """Short text as str, missing → ""."""
    s = pd.Series(values).reset_index(drop=True)
    missing = s.isna().to_numpy()
    out = s.astype(str).str.strip()
    out[missing] = ""
    return out


def to_multi(values, separator: str | None, where: str) -> pd.Series:
    """Multi-valued cells as ``list[str]`` (missing → []).

    Accepts delimited strings (split on ``separator``, whitespace stripped, empty parts dropped) or
    list-like cells such as Parquet ``list<string>``.
    """
    s = pd.Series(values).reset_index(drop=True)
    out = []
    for i, v in enumerate(s.tolist()):
        if isinstance(v, (list, tuple, np.ndarray)):
            out.append([str(x).strip() for x in v if x is not None and str(x).strip() != ""])
        elif v is None or (isinstance(v, float) and np.isnan(v)):
            out.append([])
        elif isinstance(v, str):
            if separator is None:
                raise ValueError(f"{where}: row {i} holds the string {v!r} but no separator is set for this "
                                 "multi-valued feature; set separator (e.g. '|') in the schema")
            out.append([p.strip() for p in v.split(separator) if p.strip() != ""])
        else:
            out.append([str(v)])
    return pd.Series(out, dtype=object)


def to_feature(values, spec: FeatureSpec, where: str, separator: str | None = "|",
               strict: bool = True) -> pd.Series | np.ndarray:
    """Convert one raw column to the contract dtype of ``spec.kind`` (see ``recdata.schema``)."""
    where = f"{where}, feature {spec.name!r} ({spec.kind})"
    if spec.kind == "numeric":
        return to_float(values, where, strict=strict)
    if spec.kind == "categorical":
        return to_categorical(values)
    if spec.kind == "multi_categorical":
        return to_multi(values, separator, where)
    return to_text(values)
