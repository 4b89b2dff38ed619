"""Stream tensors into, and lazily out of, ``torch.save`` files (the zip format Megatron writes).

``TorchFileWriter`` writes each tensor's bytes as they are produced, into a record reserved for it
(torch's own ``write_record_metadata``, the mechanism behind ``torch.save`` under ``skip_data``),
and the pickled object that refers to them at ``close``, so a Megatron rank file is produced
without holding its tensors in memory. The file has the records and pickle ``torch.save`` writes
(``torch._utils._rebuild_tensor_v2`` over ``data/<n>`` storages, in order); ``torch.load``, also
with ``mmap=True`` or ``map_location="meta"``, reads it unchanged.

``TorchFileReader`` unpickles the object with ``LazyTensor`` leaves that hold only dtype, shape and
where the bytes are; ``read``/``source`` then copy just the bytes asked for (pread, no mmap, so
nothing stays resident once dropped). Classes that cannot be imported here (a Megatron or
MindSpeed enum pickled in ``args``) become ``MissingClass`` stand-ins instead of failing the load.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.serialization import location_tag, normalize_storage_type

from navila_tune.convert.errors import ConversionError
from navila_tune.convert.sources import FileSource, MemorySource, TensorSource, pread_into

PICKLE_PROTOCOL = 2  # torch.save's default, what Megatron's save_checkpoint uses
# torch's zip writer computes CRC-32 at a few hundred MB/s, several times the cost of writing the
# bytes; torch.load never checks it (hence torch.serialization.set_crc32_options), so rank files
# are written without it, as torch.save does after set_crc32_options(False). Zip tools (unzip -t,
# Python's zipfile) will report bad CRCs for such files; set this to True to pay for them.
COMPUTE_CRC32 = False


def _storage_alignment() -> int:
    from torch.utils.serialization import config

    return config.save.storage_alignment


def _storage_type(dtype: torch.dtype) -> type:
    return getattr(torch, torch.storage._dtype_to_storage_type_map()[dtype])


class _StorageRef:
    """A storage already written as record ``data/<key>``; pickled through ``persistent_id``."""

    def __init__(self, key: str, dtype: torch.dtype, numel: int):
        self.key, self.dtype, self.numel = key, dtype, numel


class WrittenTensor:
    """Stands in, inside the pickled object, for a tensor whose bytes are already in the file."""

    def __init__(self, ref: _StorageRef, shape: tuple[int, ...], stride: tuple[int, ...]):
        self.ref, self.shape, self.stride = ref, shape, stride

    @property
    def dtype(self) -> torch.dtype:
        return self.ref.dtype

    def __reduce_ex__(self, protocol: int):
        # exactly what Tensor.__reduce_ex__ gives for a plain contiguous CPU tensor
        args = (self.ref, 0, self.shape, self.stride, False, collections.OrderedDict())
        return torch._utils._rebuild_tensor_v2, args


class _ZipStream:
    """The file PyTorchFileWriter writes through; remembers the data hole of a reserved record."""

    def __init__(self, path: Path):
        self.file = open(path, "wb", buffering=0)
        self.hole: tuple[int, int] | None = None

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            done += self.file.write(view[done:])
        return done

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_CUR:  # write_record_metadata skipping over the data it reserved
            self.hole = (self.file.tell(), offset)
        return self.file.seek(offset, whence)

    def tell(self) -> int:
        return self.file.tell()

    def flush(self) -> None:
        pass


class RecordSink:
    """Fills one reserved tensor record of a rank file, block by block (``pwrite`` into its hole)."""

    def __init__(self, fd: int, offset: int, nbytes: int, written: WrittenTensor, path: Path,
                 on_bytes=None):
        self._fd, self._offset, self._nbytes, self._path = fd, offset, nbytes, path
        self._done = 0
        self._on_bytes = on_bytes
        self.written = written

    def write(self, block: torch.Tensor) -> None:
        view = memoryview(block.contiguous().view(-1).view(torch.uint8).numpy())
        if self._done + len(view) > self._nbytes:
            raise ConversionError(f"internal: {self._path}: record overflow")
        done = 0
        while done < len(view):
            done += os.pwrite(self._fd, view[done:], self._offset + self._done + done)
        self._done += len(view)
        if self._on_bytes:
            self._on_bytes(len(view))

    def close(self) -> None:
        if self._done != self._nbytes:
            raise ConversionError(f"internal: {self._path}: record got {self._done} of {self._nbytes} bytes")


class TorchFileWriter:
    """Write a ``torch.save``-format file whose tensors are added (and written) one at a time.

    ``open_tensor`` reserves a record (``write_record_metadata``, as ``torch.save`` under
    ``skip_data`` does) and returns a sink that fills it block by block; ``add_tensor`` writes an
    in-memory tensor at once; ``close`` pickles the object that refers to them.
    """

    def __init__(self, path: str | os.PathLike, compute_crc32: bool | None = None, on_bytes=None):
        self.path = Path(path)
        crc = COMPUTE_CRC32 if compute_crc32 is None else compute_crc32
        self._stream = _ZipStream(self.path)
        self._zip = torch._C.PyTorchFileWriter(self._stream, crc, _storage_alignment())
        self._next_key = 0
        self._storage_keys: dict[int, str] = {}
        self._storage_dtypes: dict[int, torch.dtype] = {}
        self._on_bytes = on_bytes
        self.bytes_written = 0
        self._closed = False

    def open_tensor(self, dtype: torch.dtype, shape: tuple[int, ...]) -> RecordSink:
        """Reserve a record for a contiguous tensor; fill it through the sink, then use ``sink.written``."""
        numel = 1
        for s in shape:
            numel *= s
        nbytes = numel * dtype.itemsize
        key = str(self._next_key)
        self._next_key += 1
        self._stream.hole = None
        self._zip.write_record_metadata(f"data/{key}", nbytes)
        if nbytes:
            if self._stream.hole is None or self._stream.hole[1] != nbytes:
                raise RuntimeError(f"{self.path}: torch's zip writer did not reserve {nbytes} bytes for data/{key}")
            offset = self._stream.hole[0]
        else:
            offset = 0
        self.bytes_written += nbytes
        written = WrittenTensor(_StorageRef(key, dtype, numel), tuple(shape), _contiguous_stride(shape))
        return RecordSink(self._stream.file.fileno(), offset, nbytes, written, self.path, self._on_bytes)

    def add_tensor(self, tensor: torch.Tensor) -> WrittenTensor:
        """Write an in-memory tensor's bytes now; put the returned stand-in where it goes in the object."""
        t = tensor.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        if not t.is_contiguous():
            t = t.contiguous()
        storage = t.untyped_storage()
        start = t.storage_offset() * t.element_size()
        if start or storage.nbytes() != t.nbytes:
            storage = storage[start:start + t.nbytes]  # a view: write only its own bytes (aliased, no copy)
        key = self._write_storage(storage)
        return WrittenTensor(_StorageRef(key, t.dtype, t.numel()), tuple(t.shape), _contiguous_stride(t.shape))

    def _write_storage(self, storage: torch.UntypedStorage) -> str:
        key = str(self._next_key)
        self._next_key += 1
        self._zip.write_record(f"data/{key}", storage, storage.nbytes())
        self.bytes_written += storage.nbytes()
        return key

    def _persistent_id(self, obj: Any):
        if isinstance(obj, _StorageRef):
            return ("storage", _storage_type(obj.dtype), obj.key, "cpu", obj.numel)
        if isinstance(obj, torch.storage.TypedStorage) or torch.is_storage(obj):
            # any other tensor in the object (e.g. optimizer state): same rules as torch.save
            if isinstance(obj, torch.storage.TypedStorage):
                storage, dtype = obj._untyped_storage, obj.dtype
                storage_type, numel = getattr(torch, obj._pickle_storage_type()), obj._size()
            else:
                storage, dtype = obj, torch.uint8
                storage_type, numel = normalize_storage_type(type(obj)), obj.nbytes()
            if storage.device.type != "cpu":
                storage = storage.cpu()
            ptr = storage.data_ptr()
            if ptr and self._storage_dtypes.setdefault(ptr, dtype) != dtype:
                raise RuntimeError("cannot save tensors that view the same data as different dtypes")
            key = self._storage_keys.get(storage._cdata)
            if key is None:
                key = self._storage_keys[storage._cdata] = self._write_storage(storage)
            return ("storage", storage_type, key, location_tag(storage), numel)
        return None

    def close(self, obj: Any) -> None:
        """Pickle ``obj`` (holding ``WrittenTensor`` stand-ins and/or tensors) and finish the file."""
        if self._closed:
            raise RuntimeError(f"{self.path} is already closed")
        writer = self

        class _Pickler(pickle.Pickler):
            def persistent_id(self, o):
                return writer._persistent_id(o)

        buf = io.BytesIO()
        _Pickler(buf, protocol=PICKLE_PROTOCOL).dump(obj)
        data = buf.getvalue()
        self._zip.write_record("data.pkl", data, len(data))
        self._zip.write_record(".format_version", "1", 1)
        alignment = str(_storage_alignment())
        self._zip.write_record(".storage_alignment", alignment, len(alignment))
        self._zip.write_record("byteorder", sys.byteorder, len(sys.byteorder))
        self._zip.write_end_of_file()
        self._stream.file.close()
        self._closed = True

    def abort(self) -> None:
        """Stop writing and release the file (the caller removes it)."""
        if not self._closed:
            self._closed = True
            try:  # finish the zip now: torch's writer would otherwise do it from its destructor
                self._zip.write_end_of_file()
            except Exception:
                pass
            self._stream.file.close()


# ------------------------------------------------------------------------------------------ reading


@dataclass(frozen=True)
class LazyTensor:
    """A tensor in a torch file, not yet read: ``TorchFileReader.read`` returns its values."""

    key: str
    dtype: torch.dtype
    storage_offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def nbytes(self) -> int:
        return self.numel() * self.dtype.itemsize


class MissingClass:
    """Stand-in for a pickled class not importable here; keeps what was pickled for inspection."""

    _module = "?"
    _name = "?"

    def __init__(self, *args: Any, **kwargs: Any):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<missing {self._module}.{self._name} {getattr(self, 'args', ())}>"


def _missing_class(module: str, name: str) -> type:
    return type(name, (MissingClass,), {"_module": module, "_name": name})


class TorchFileReader:
    """Read a ``torch.save`` zip file lazily: the object first, then tensors one by one."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self._zip = torch._C.PyTorchFileReader(str(self.path))
        except RuntimeError as e:
            raise ConversionError(
                f"{self.path} is not a readable torch checkpoint (truncated, corrupt or not written by "
                f"torch.save): {str(e).splitlines()[0]}; re-create it from its source") from None
        if self._zip.has_record("byteorder") and self._zip.get_record("byteorder") != b"little":
            raise ConversionError(f"{self.path} was written on a big-endian machine; not supported")
        self._fd = os.open(self.path, os.O_RDONLY)
        self._records: dict[str, tuple[int, int]] = {}

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "TorchFileReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def load_object(self) -> Any:
        """The pickled object, with ``LazyTensor`` in place of every tensor."""
        try:
            data = self._zip.get_record("data.pkl")
        except RuntimeError as e:
            raise ConversionError(f"{self.path} has no readable data.pkl record ({e}); re-create it") from None
        return _LazyUnpickler(io.BytesIO(data)).load()

    def _record(self, key: str) -> tuple[int, int]:
        if key not in self._records:
            name = f"data/{key}"
            if not self._zip.has_record(name):
                raise ConversionError(f"{self.path} lacks tensor record {name}: truncated or corrupt")
            self._records[key] = (self._zip.get_record_offset(name), self._zip.get_record_size(name))
        return self._records[key]

    def check(self, lazy: LazyTensor) -> None:
        """Raise unless the file holds every byte of ``lazy`` (cheap: reads no tensor data)."""
        self._span(lazy)

    def _span(self, lazy: LazyTensor) -> tuple[int, int]:
        offset, size = self._record(lazy.key)
        item = lazy.dtype.itemsize
        if lazy.numel() == 0:
            return offset, 0
        extent = 1 + sum((s - 1) * st for s, st in zip(lazy.shape, lazy.stride))
        start, length = lazy.storage_offset * item, extent * item
        if start + length > size or offset + size > os.fstat(self._fd).st_size:
            raise ConversionError(f"{self.path}: tensor record data/{lazy.key} is shorter than its "
                                  f"shape {list(lazy.shape)} needs: the file is truncated; re-create it")
        return offset + start, length

    def read(self, lazy: LazyTensor) -> torch.Tensor:
        """Copy one tensor's values from the file into new memory."""
        start, length = self._span(lazy)
        buf = torch.empty(length, dtype=torch.uint8)
        if length:
            pread_into(self._fd, memoryview(buf.numpy()), start, self.path)
        flat = buf.view(lazy.dtype)
        if _is_contiguous(lazy.shape, lazy.stride):
            return flat.view(lazy.shape)
        return flat.as_strided(lazy.shape, lazy.stride).clone()

    def source(self, lazy: LazyTensor, name: str) -> TensorSource:
        """``lazy`` as a source that reads rows straight from the file (whole, if not contiguous)."""
        if _is_contiguous(lazy.shape, lazy.stride):
            start, _ = self._span(lazy)
            return FileSource(name, lazy.shape, lazy.dtype, self._fd, start, self.path)
        return MemorySource(self.read(lazy), name)

    def materialize(self, obj: Any) -> Any:
        """``obj`` with every ``LazyTensor`` inside dicts, lists and tuples replaced by its values."""
        if isinstance(obj, LazyTensor):
            return self.read(obj)
        if isinstance(obj, dict):
            out = type(obj)() if type(obj) in (dict, collections.OrderedDict) else {}
            for k, v in obj.items():
                out[k] = self.materialize(v)
            return out
        if isinstance(obj, list):
            return [self.materialize(v) for v in obj]
        if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
            return tuple(self.materialize(v) for v in obj)
        return obj


def _contiguous_stride(shape: tuple[int, ...] | torch.Size) -> tuple[int, ...]:
    stride, acc = [], 1
    for s in reversed(tuple(shape)):
        stride.append(acc)
        acc *= max(s, 1)
    return tuple(reversed(stride))


def _is_contiguous(shape: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    expected = 1
    for s, st in zip(reversed(shape), reversed(stride)):
        if s != 1 and st != expected:
            return False
        expected *= s
    return True


def _rebuild_lazy(storage: _StorageRef, storage_offset: int, size, stride, *_: Any) -> LazyTensor:
    return LazyTensor(storage.key, storage.dtype, int(storage_offset), tuple(size), tuple(stride))


class _LazyUnpickler(pickle.Unpickler):
    _REBUILDERS = {
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_lazy,
        ("torch._utils", "_rebuild_parameter"): lambda data, *_: data,
        ("torch._utils", "_rebuild_parameter_with_state"): lambda data, *_: data,
        ("torch._tensor", "_rebuild_from_type_v2"): lambda func, new_type, args, state: func(*args),
    }

    def find_class(self, module: str, name: str) -> Any:
        special = self._REBUILDERS.get((module, name))
        if special is not None:
            return special
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return _missing_class(module, name)

    def persistent_load(self, pid: Any) -> _StorageRef:
        typename, storage_type, key, _location, numel = pid
        if typename != "storage":
            raise pickle.UnpicklingError(f"unknown persistent id {typename!r}")
        if storage_type is torch.UntypedStorage:
            dtype = torch.uint8
        else:
            dtype = torch.storage._get_dtype_from_pickle_storage_type(storage_type.__name__)
        return _StorageRef(str(key), dtype, int(numel))
