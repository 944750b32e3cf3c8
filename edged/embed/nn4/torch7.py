"""A small reader and writer for Lua Torch7's binary serialisation (`torch.save(file, obj)`).

Little-endian, 64-bit longs. Every value starts with an int32 type tag:
0 nil, 1 number (float64), 2 string (int32 length + bytes), 3 table, 4 torch object,
5 boolean (int32), 6 function, 7/8 recursive function. Tables, torch objects and recursive
functions carry an int32 reference index; an index seen before is a back-reference.
A torch object is an optional version string ("V <n>"), its class name, then its payload:
tensors (int32 ndim, int64 sizes, int64 strides, int64 1-based storage offset, storage
object), storages (int64 size + raw data), anything else a table of fields.

The reader returns plain Python values: None, float, str, bool, `dict` for tables (integral
number keys become `int`), `numpy.ndarray` for tensors and storages, `TorchObject` for other
classes (nn modules) and `LuaFunction` for functions, which are never run. Corrupt or
truncated input raises `ModelFileError` naming the file and the byte offset.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edged.errors import ModelFileError

NIL, NUMBER, STRING, TABLE, TORCH, BOOLEAN, FUNCTION, LEGACY_RECUR_FUNCTION, RECUR_FUNCTION = range(9)

#: Element type of each storage class (CUDA storages are saved with host-side element types).
STORAGE_DTYPES: dict[str, np.dtype] = {
    name: np.dtype(dtype).newbyteorder("<")
    for name, dtype in {
        "Double": np.float64, "Float": np.float32, "Half": np.float16, "Long": np.int64, "Int": np.int32,
        "Short": np.int16, "Char": np.int8, "Byte": np.uint8,
        "Cuda": np.float32, "CudaDouble": np.float64, "CudaHalf": np.float16, "CudaLong": np.int64,
        "CudaInt": np.int32, "CudaShort": np.int16, "CudaChar": np.int8, "CudaByte": np.uint8,
    }.items()
}
_CLASS_OF_DTYPE = {np.dtype(np.float64): "Double", np.dtype(np.float32): "Float", np.dtype(np.float16): "Half",
                   np.dtype(np.int64): "Long", np.dtype(np.int32): "Int", np.dtype(np.int16): "Short",
                   np.dtype(np.int8): "Char", np.dtype(np.uint8): "Byte"}
_MAX_DEPTH = 256
_MAX_DIMS = 64


@dataclass(eq=False)
class TorchObject:
    """An instance of a Torch class other than tensors and storages (e.g. `nn.Linear`): its fields."""

    class_name: str
    fields: dict[Any, Any] = field(default_factory=dict)
    version: int = 1

    @property
    def short_name(self) -> str:
        """The class name without its package (`nn.`, `cudnn.`, ...)."""
        return self.class_name.rsplit(".", 1)[-1]

    def children(self) -> list[Any]:
        """The entries of the `modules` field in order (containers), else []."""
        return table_list(self.fields.get("modules"))


@dataclass(eq=False)
class LuaFunction:
    """A serialised Lua function (bytecode and upvalues), kept as data only."""

    bytecode: bytes
    upvalues: Any = None


def table_list(table: Any) -> list[Any]:
    """A Lua array table {1: a, 2: b, ...} as a list (stops at the first gap)."""
    if not isinstance(table, dict):
        return []
    out = []
    while len(out) + 1 in table:
        out.append(table[len(out) + 1])
    return out


class _Reader:
    def __init__(self, data: bytes, name: str) -> None:
        self.buf = memoryview(data)
        self.pos = 0
        self.name = name
        self.memo: dict[int, Any] = {}
        self.depth = 0

    def fail(self, message: str) -> ModelFileError:
        return ModelFileError(f"{self.name}: not a valid Torch7 file: {message} (at byte {self.pos})")

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            raise self.fail(f"truncated: needed {n} more bytes, {len(self.buf) - self.pos} left")
        chunk = self.buf[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def int32(self) -> int:
        return struct.unpack("<i", self.take(4))[0]

    def int64(self) -> int:
        return struct.unpack("<q", self.take(8))[0]

    def int64s(self, n: int) -> list[int]:
        return list(struct.unpack(f"<{n}q", self.take(8 * n)))

    def string(self) -> str:
        size = self.int32()
        if size < 0:
            raise self.fail(f"negative string length {size}")
        return bytes(self.take(size)).decode("utf-8", errors="replace")

    def value(self) -> Any:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise self.fail("objects nested too deeply")
        try:
            return self._value()
        finally:
            self.depth -= 1

    def _value(self) -> Any:
        tag = self.int32()
        if tag == NIL:
            return None
        if tag == NUMBER:
            return struct.unpack("<d", self.take(8))[0]
        if tag == STRING:
            return self.string()
        if tag == BOOLEAN:
            return self.int32() == 1
        if tag == FUNCTION:
            code = bytes(self.take(self._length()))
            return LuaFunction(code, self.value())
        if tag in (TABLE, TORCH, RECUR_FUNCTION, LEGACY_RECUR_FUNCTION):
            index = self.int32()
            if index in self.memo:
                return self.memo[index]
            if tag == TABLE:
                return self._table(index)
            if tag == TORCH:
                return self._torch(index)
            function = LuaFunction(bytes(self.take(self._length())))
            self.memo[index] = function
            function.upvalues = self.value()
            return function
        raise self.fail(f"unknown type tag {tag}")

    def _length(self) -> int:
        size = self.int32()
        if size < 0:
            raise self.fail(f"negative length {size}")
        return size

    def _table(self, index: int) -> dict[Any, Any]:
        table: dict[Any, Any] = {}
        self.memo[index] = table
        size = self.int32()
        if size < 0 or size * 8 > len(self.buf) - self.pos:
            raise self.fail(f"impossible table size {size}")
        for _ in range(size):
            key = self.value()
            value = self.value()
            if isinstance(key, float) and key.is_integer():
                key = int(key)
            if isinstance(key, dict | list | np.ndarray | TorchObject | LuaFunction):
                key = id(key)  # tables as keys: unused by nn modules, kept unique
            table[key] = value
        return table

    def _torch(self, index: int) -> Any:
        version_or_class = self.string()
        version = 0
        class_name = version_or_class
        if version_or_class.startswith("V "):
            try:
                version = int(version_or_class[2:])
            except ValueError as exc:
                raise self.fail(f"bad version string {version_or_class!r}") from exc
            class_name = self.string()
        if class_name.startswith("torch.") and class_name.endswith("Storage"):
            array = self._storage(class_name)
            self.memo[index] = array
            return array
        if class_name.startswith("torch.") and class_name.endswith("Tensor"):
            array = self._tensor(class_name)
            self.memo[index] = array
            return array
        obj = TorchObject(class_name, version=version)
        self.memo[index] = obj
        payload = self.value()
        if isinstance(payload, dict):
            obj.fields = payload
        elif payload is not None:
            obj.fields = {"value": payload}
        return obj

    def _dtype(self, class_name: str, suffix: str) -> np.dtype:
        kind = class_name[len("torch."):-len(suffix)]
        if kind not in STORAGE_DTYPES:
            raise self.fail(f"unsupported class {class_name}")
        return STORAGE_DTYPES[kind]

    def _storage(self, class_name: str) -> np.ndarray:
        dtype = self._dtype(class_name, "Storage")
        size = self.int64()
        if size < 0 or size * dtype.itemsize > len(self.buf) - self.pos:
            raise self.fail(f"truncated or corrupt: {class_name} of {size} elements does not fit in the file")
        return np.frombuffer(self.take(size * dtype.itemsize), dtype=dtype).astype(dtype.newbyteorder("="))

    def _tensor(self, class_name: str) -> np.ndarray:
        dtype = self._dtype(class_name, "Tensor")
        ndim = self.int32()
        if not 0 <= ndim <= _MAX_DIMS:
            raise self.fail(f"tensor with {ndim} dimensions")
        sizes = self.int64s(ndim)
        strides = self.int64s(ndim)
        offset = self.int64() - 1
        storage = self.value()
        if ndim == 0 or storage is None:
            return np.zeros(0, dtype=dtype.newbyteorder("="))
        if not isinstance(storage, np.ndarray) or storage.ndim != 1:
            raise self.fail(f"{class_name} without a storage")
        if any(s < 0 for s in sizes) or any(s < 0 for s in strides) or offset < 0:
            raise self.fail(f"{class_name} with negative size, stride or offset")
        if 0 in sizes:
            return np.zeros(sizes, dtype=storage.dtype)
        last = offset + sum((n - 1) * s for n, s in zip(sizes, strides, strict=True))
        if last >= storage.size:
            raise self.fail(f"{class_name} of shape {tuple(sizes)} needs element {last} of {storage.size}")
        view = np.lib.stride_tricks.as_strided(storage[offset:], shape=sizes,
                                               strides=[s * storage.itemsize for s in strides], writeable=False)
        return np.array(view)


def read_t7(source: str | Path | bytes, name: str | None = None) -> Any:
    """Deserialise one Torch7 object from a file path or bytes."""
    if isinstance(source, bytes | bytearray):
        data, label = bytes(source), name or "<bytes>"
    else:
        label = name or str(source)
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise ModelFileError(f"{label}: cannot read ({exc.strerror or exc})") from exc
    if len(data) < 4:
        raise ModelFileError(f"{label}: not a valid Torch7 file: only {len(data)} bytes")
    reader = _Reader(data, label)
    try:
        return reader.value()
    except RecursionError as exc:
        raise reader.fail("objects nested too deeply") from exc


@dataclass(eq=False)
class Storage:
    """Marks a 1-D array to be written as a Torch storage (e.g. `nn.View`'s `size` LongStorage)."""

    data: np.ndarray


class _Writer:
    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.indices: dict[int, int] = {}
        self.keep: list[Any] = []  # holds written objects so their ids stay unique
        self.count = 0

    def int32(self, v: int) -> None:
        self.parts.append(struct.pack("<i", v))

    def int64(self, v: int) -> None:
        self.parts.append(struct.pack("<q", v))

    def string(self, s: str) -> None:
        raw = s.encode("utf-8")
        self.int32(len(raw))
        self.parts.append(raw)

    def new_index(self) -> int:
        self.count += 1
        self.int32(self.count)
        return self.count

    def reference(self, obj: Any) -> bool:
        """Write the reference index of `obj`; True if it was written before (a back-reference)."""
        if id(obj) in self.indices:
            self.int32(self.indices[id(obj)])
            return True
        self.indices[id(obj)] = self.new_index()
        self.keep.append(obj)
        return False

    def value(self, v: Any) -> None:
        if v is None:
            self.int32(NIL)
        elif isinstance(v, bool):
            self.int32(BOOLEAN)
            self.int32(1 if v else 0)
        elif isinstance(v, int | float | np.integer | np.floating):
            self.int32(NUMBER)
            self.parts.append(struct.pack("<d", float(v)))
        elif isinstance(v, str):
            self.int32(STRING)
            self.string(v)
        elif isinstance(v, dict | list):
            self.int32(TABLE)
            if self.reference(v):
                return
            items = list(enumerate(v, start=1)) if isinstance(v, list) else list(v.items())
            self.int32(len(items))
            for key, item in items:
                self.value(key)
                self.value(item)
        elif isinstance(v, np.ndarray):
            self.tensor(v)
        elif isinstance(v, Storage):
            self.int32(TORCH)
            if not self.reference(v):
                self.storage_payload(np.asarray(v.data).reshape(-1))
        elif isinstance(v, TorchObject):
            self.int32(TORCH)
            if self.reference(v):
                return
            self.string(f"V {v.version}")
            self.string(v.class_name)
            self.value(v.fields)
        else:
            raise TypeError(f"cannot write {type(v).__name__} to Torch7")

    def tensor(self, array: np.ndarray) -> None:
        kind = _CLASS_OF_DTYPE.get(array.dtype)
        if kind is None:
            raise TypeError(f"no Torch7 tensor type for {array.dtype}")
        self.int32(TORCH)
        if self.reference(array):
            return
        self.string("V 1")
        self.string(f"torch.{kind}Tensor")
        if array.size == 0:  # Torch's empty tensor: no dimensions, no storage
            self.int32(0)
            self.int64(1)
            self.int32(NIL)
            return
        self.int32(array.ndim)
        strides = [int(np.prod(array.shape[i + 1:], dtype=np.int64)) for i in range(array.ndim)]
        for n in array.shape:
            self.int64(n)
        for s in strides:
            self.int64(s)
        self.int64(1)
        self.int32(TORCH)
        self.new_index()
        self.storage_payload(np.ascontiguousarray(array).reshape(-1))

    def storage_payload(self, flat: np.ndarray) -> None:
        kind = _CLASS_OF_DTYPE.get(flat.dtype)
        if kind is None:
            raise TypeError(f"no Torch7 storage type for {flat.dtype}")
        self.string("V 1")
        self.string(f"torch.{kind}Storage")
        self.int64(flat.size)
        self.parts.append(flat.astype(flat.dtype.newbyteorder("<")).tobytes())


def write_t7(obj: Any) -> bytes:
    """Serialise `obj` like Lua `torch.save`: tables from dict/list, tensors from ndarrays, storages
    from `Storage`, nn modules from `TorchObject`. An object given twice becomes a back-reference."""
    writer = _Writer()
    writer.value(obj)
    return b"".join(writer.parts)
