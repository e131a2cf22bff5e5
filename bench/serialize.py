"""Stored artifacts, scores and checkpoints are data, not code: never pickle.

A value is written into a folder as
  data.json            the structure: JSON scalars, lists, dicts, plus tagged nodes ({"$tensor": "t0"}, ...)
  tensors.safetensors  torch tensors                        (only when there are any)
  arrays.npz           numpy arrays and numpy scalars      (read with allow_pickle=False)
  frame-<i>.parquet    pandas DataFrames (pyarrow installed; else frame-<i>.json + frame-<i>.npz, columnar)

Supported values: None, bool, int, float, str, lists, tuples, dicts (any supported keys), numpy arrays (not of
dtype object) and scalars, torch tensors, pandas DataFrames, and, by name from the closed tables of
bench.storable: declared statistic functions (`@statistic`), `functools.partial`s of them whose arguments are
such values, and declared dataclasses (`@storable`). Anything else raises BenchError on save; on load a name that
is not declared (or outside the allow-list of packages) raises BenchError: nothing is imported or called for it.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import types
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from bench import storable
from bench.errors import BenchError

FORMAT = "bench-data/1"
DATA_JSON = "data.json"
TENSORS = "tensors.safetensors"
ARRAYS = "arrays.npz"
ALWAYS_ALLOWED = ("bench",)

_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TAGS = ("$tensor", "$array", "$scalar", "$tuple", "$items", "$function", "$partial", "$dataclass", "$frame")
_use_parquet: bool | None = None  # None: when pyarrow is importable (tests switch it)


def plugin_packages(obj: Any) -> tuple[str, ...]:
    """The allow-list for a plugin's stored values: its own top-level package (and always `bench`)."""
    cls = obj if isinstance(obj, type) else type(obj)
    return (cls.__module__.split(".")[0],)


def _allowed(allowed: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*ALWAYS_ALLOWED, *allowed)))


def _stored_name(obj: Any, allowed: tuple[str, ...], what: str) -> str:
    """The name under which a declared statistic (functions) or storable dataclass is written."""
    declared = storable.is_storable(obj) if what == "dataclass" else storable.is_statistic(obj)
    if not declared:
        how = "@bench.api.storable" if what == "dataclass" else "@bench.api.statistic"
        raise BenchError(f"cannot store {what} {obj!r}: only declared ones can be stored (decorate it with {how})")
    name = storable.name_of(obj)
    if name.split(".")[0].split(":")[0] not in allowed:
        raise BenchError(
            f"cannot store {what} {name}: only those of the packages {', '.join(allowed)} can be stored (and "
            "resolved on load)"
        )
    return name


def _resolve(ref: Any, allowed: tuple[str, ...], kind: str) -> Any:
    """The declared statistic / dataclass named `module:qualname` (bench.storable's closed tables), only within
    the allow-list. Nothing is imported or called for a name: an unknown one is a damaged entry."""
    if not isinstance(ref, str) or ref.count(":") != 1:
        raise BenchError(f"malformed {kind} reference {ref!r}")
    module, qualname = ref.split(":")
    if not (_DOTTED.match(module) and _NAME.match(qualname)):
        raise BenchError(f"malformed {kind} reference {ref!r}")
    if module.split(".")[0] not in allowed:
        raise BenchError(f"refusing {kind} {ref}: not in an allowed package ({', '.join(allowed)})")
    obj = storable.dataclass_named(ref) if kind == "dataclass" else storable.statistic_named(ref)
    if obj is None:
        what = "storable dataclass" if kind == "dataclass" else "statistic"
        raise BenchError(f"refusing {kind} {ref}: not a declared {what}")
    return obj


# ---- DataFrames ------------------------------------------------------------------------------------------------


def _parquet() -> bool:
    if _use_parquet is not None:
        return _use_parquet
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


_NUMPY_KINDS = "biufcmM"


def _save_frame(df, folder: Path, stem: str) -> dict:
    if _parquet() and all(isinstance(c, str) for c in df.columns) and df.columns.is_unique:
        try:
            df.to_parquet(folder / f"{stem}.parquet")
            return {"$frame": f"{stem}.parquet"}
        except Exception:  # noqa: BLE001 - e.g. mixed-type object columns: the columnar form below
            (folder / f"{stem}.parquet").unlink(missing_ok=True)
    import pandas as pd

    arrays, columns = {}, []
    for i, (name, col) in enumerate(df.items()):
        entry = {"name": _plain(name), "dtype": str(col.dtype)}
        if isinstance(col.dtype, np.dtype) and col.dtype.kind in _NUMPY_KINDS:
            arrays[f"c{i}"] = col.to_numpy()
            entry["array"] = f"c{i}"
        else:
            entry["values"] = [None if v is None or (isinstance(v, float) and v != v) else _plain(v)
                               for v in col.astype(object).tolist()]  # fmt: skip
        columns.append(entry)
    index = df.index
    if isinstance(index, pd.RangeIndex):
        idx = {"range": [index.start, index.stop, index.step]}
    elif isinstance(index.dtype, np.dtype) and index.dtype.kind in _NUMPY_KINDS:
        arrays["index"] = index.to_numpy()
        idx = {"array": "index"}
    else:
        idx = {"values": [_plain(v) for v in index.tolist()], "dtype": str(index.dtype)}
    np.savez(folder / f"{stem}.npz", **arrays)
    (folder / f"{stem}.json").write_text(json.dumps({"columns": columns, "index": idx}), encoding="utf-8")
    return {"$frame": f"{stem}.json"}


def _plain(v):
    if isinstance(v, np.generic):
        v = v.item()
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise BenchError(f"cannot store a DataFrame cell of type {type(v).__name__} without pyarrow")


def _load_frame(folder: Path, name: str):
    import pandas as pd

    if not isinstance(name, str) or not re.match(r"^frame-\d+\.(parquet|json)$", name):
        raise BenchError(f"malformed frame reference {name!r}")
    if name.endswith(".parquet"):
        return pd.read_parquet(folder / name)
    meta = json.loads((folder / name).read_text(encoding="utf-8"))
    with np.load(folder / name.replace(".json", ".npz"), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    data = {}
    for c in meta["columns"]:
        if "array" in c:
            data[c["name"]] = pd.Series(arrays[c["array"]], dtype=arrays[c["array"]].dtype)
        else:
            data[c["name"]] = pd.Series(c["values"], dtype=c["dtype"])
    idx = meta["index"]
    if "range" in idx:
        index = pd.RangeIndex(*idx["range"])
    elif "array" in idx:
        index = pd.Index(arrays[idx["array"]])
    else:
        index = pd.Index(idx["values"], dtype=idx["dtype"])
    df = pd.DataFrame(data)
    df.index = index
    return df


# ---- encoding ----------------------------------------------------------------------------------------------------


class _Writer:
    def __init__(self, folder: Path, allowed: tuple[str, ...]):
        self.folder, self.allowed = folder, allowed
        self.tensors: dict = {}
        self.arrays: dict = {}
        self.frames = 0
        self._storages: set = set()

    def encode(self, v: Any) -> Any:
        import torch

        if isinstance(v, np.generic):  # before float: np.float64 is a float, but must come back as np.float64
            if v.dtype.hasobject:
                raise BenchError("cannot store a numpy object scalar")
            name = f"a{len(self.arrays)}"
            self.arrays[name] = np.asarray(v)
            return {"$scalar": name}
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if isinstance(v, torch.Tensor):
            return {"$tensor": self._tensor(v)}
        if isinstance(v, np.ndarray):
            if v.dtype.hasobject:
                raise BenchError("cannot store a numpy array of dtype object (it would need pickle)")
            name = f"a{len(self.arrays)}"
            self.arrays[name] = v
            return {"$array": name}
        if isinstance(v, list):
            return [self.encode(x) for x in v]
        if type(v) is tuple:
            return {"$tuple": [self.encode(x) for x in v]}
        if type(v) is dict or (isinstance(v, dict) and type(v).__module__ == "collections"):
            if all(isinstance(k, str) and not k.startswith("$") for k in v):
                return {k: self.encode(x) for k, x in v.items()}
            return {"$items": [[self.encode(k), self.encode(x)] for k, x in v.items()]}
        if type(v) is functools.partial:
            if v.__dict__:
                raise BenchError(f"cannot store a functools.partial with attributes: {v!r}")
            return {"$partial": {"func": self.encode(v.func), "args": [self.encode(a) for a in v.args],
                                 "keywords": {k: self.encode(x) for k, x in v.keywords.items()}}}  # fmt: skip
        if isinstance(v, types.FunctionType):
            return {"$function": _stored_name(v, self.allowed, "function")}
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            ref = _stored_name(type(v), self.allowed, "dataclass")
            fields = {f.name: self.encode(getattr(v, f.name)) for f in dataclasses.fields(v) if f.init}
            return {"$dataclass": ref, "fields": fields}
        import pandas as pd

        if isinstance(v, pd.DataFrame):
            stem = f"frame-{self.frames}"
            self.frames += 1
            return _save_frame(v, self.folder, stem)
        raise BenchError(
            f"cannot store a value of type {type(v).__module__}.{type(v).__qualname__}: stored values are data "
            "(tensors, numpy arrays, DataFrames, JSON scalars, and lists/tuples/dicts/dataclasses of them)"
        )

    def _tensor(self, t) -> str:
        t = t.detach()
        import torch

        if t.layout != torch.strided:
            raise BenchError("cannot store a sparse tensor")
        t = t.cpu()
        storage = t.untyped_storage().data_ptr()
        if not t.is_contiguous() or t.numel() == 0 or storage in self._storages:
            t = t.contiguous().clone()  # safetensors stores no shared or strided tensors
        self._storages.add(t.untyped_storage().data_ptr())
        name = f"t{len(self.tensors)}"
        self.tensors[name] = t
        return name


class _Reader:
    def __init__(self, folder: Path, allowed: tuple[str, ...]):
        self.folder, self.allowed = folder, allowed
        self._tensors = self._arrays = None

    def tensors(self) -> dict:
        if self._tensors is None:
            from safetensors.torch import load_file

            self._tensors = load_file(str(self.folder / TENSORS))
        return self._tensors

    def arrays(self) -> dict:
        if self._arrays is None:
            with np.load(self.folder / ARRAYS, allow_pickle=False) as z:
                self._arrays = {k: z[k] for k in z.files}
        return self._arrays

    def decode(self, v: Any) -> Any:
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if isinstance(v, list):
            return [self.decode(x) for x in v]
        if not isinstance(v, dict):
            raise BenchError(f"malformed node {v!r}")
        tag = next((k for k in v if k in _TAGS), None)
        if tag is None:
            return {k: self.decode(x) for k, x in v.items()}
        body = v[tag]
        if tag == "$tensor":
            return self.tensors()[body]
        if tag == "$array":
            return self.arrays()[body]
        if tag == "$scalar":
            return self.arrays()[body][()]
        if tag == "$tuple":
            return tuple(self.decode(x) for x in body)
        if tag == "$items":
            return {self.decode(k): self.decode(x) for k, x in body}
        if tag == "$function":
            return _resolve(body, self.allowed, "function")
        if tag == "$partial":
            if not (isinstance(body, dict) and isinstance(body.get("args"), list)
                    and isinstance(body.get("keywords"), dict) and isinstance(body.get("func"), dict)):
                raise BenchError("malformed partial")
            func = self.decode(body["func"])
            if not (storable.is_statistic(func) or isinstance(func, functools.partial)):
                raise BenchError("malformed partial")
            return functools.partial(func, *[self.decode(a) for a in body["args"]],
                                     **{k: self.decode(x) for k, x in body["keywords"].items()})  # fmt: skip
        if tag == "$dataclass":
            cls = _resolve(body, self.allowed, "dataclass")
            if not isinstance(v.get("fields"), dict):
                raise BenchError("malformed dataclass")
            return cls(**{k: self.decode(x) for k, x in v["fields"].items()})
        if tag == "$frame":
            return _load_frame(self.folder, body)
        raise BenchError(f"malformed node {v!r}")


# ---- the public helpers ------------------------------------------------------------------------------------------


def save_tensor_file(tensors: dict, path, metadata: dict | None = None) -> None:
    """safetensors' save_file, with the permissions of any other file the user writes (it creates 0600 files)."""
    from safetensors.torch import save_file

    from bench.files import umask

    save_file(tensors, str(path), metadata=metadata)
    os.chmod(path, 0o666 & ~umask())


def save_data(value: Any, folder, allowed: Iterable[str] = ()) -> None:
    """Write `value` (see the module docstring for what is supported) into the new folder `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    writer = _Writer(folder, _allowed(allowed))
    tree = writer.encode(value)
    if writer.tensors:
        save_tensor_file(writer.tensors, folder / TENSORS)
    if writer.arrays:
        np.savez(folder / ARRAYS, **writer.arrays)
    text = json.dumps({"format": FORMAT, "value": tree})
    (folder / DATA_JSON).write_text(text, encoding="utf-8")


def load_data(folder, allowed: Iterable[str] = ()) -> Any:
    """Read a value written by `save_data`. Functions and dataclasses resolve only within `allowed` + bench."""
    folder = Path(folder)
    if not (folder / DATA_JSON).is_file():
        raise BenchError(f"{folder} is not a stored value (no {DATA_JSON})")
    doc = json.loads((folder / DATA_JSON).read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BenchError(f"{folder / DATA_JSON}: unknown format {doc.get('format') if isinstance(doc, dict) else doc!r}")
    return _Reader(folder, _allowed(allowed)).decode(doc["value"])


def save_tensors_and_json(folder, tensors: dict, meta: dict) -> None:
    """The simplest artifact layout: named tensors (safetensors) plus JSON metadata."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    writer = _Writer(folder, ())
    names = {k: writer._tensor(t) for k, t in tensors.items()}
    save_tensor_file({k: writer.tensors[n] for k, n in names.items()}, folder / TENSORS)
    (folder / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def load_tensors_and_json(folder) -> tuple[dict, dict]:
    from safetensors.torch import load_file

    folder = Path(folder)
    return load_file(str(folder / TENSORS)), json.loads((folder / "meta.json").read_text(encoding="utf-8"))
