"""HF Llama directories: validated lazy reading, streaming safetensors writing, config and tokenizer files."""

from __future__ import annotations

import json
import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from navila_tune.arch import LlamaArch
from navila_tune.convert.errors import ConversionError
from navila_tune.convert.sources import FileSource, nbytes

CONFIG = "config.json"
INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
# Copied byte for byte from the source model into an exported HF directory (when present there).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "added_tokens.json", "chat_template.jinja", "generation_config.json")
DEFAULT_MAX_SHARD_BYTES = 5 * 10**9  # transformers' save_pretrained default ("5GB")

_ST_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64,
              "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
              "BOOL": torch.bool}
_ST_NAMES = {v: k for k, v in _ST_DTYPES.items()}


def read_config(hf_dir: Path) -> dict[str, Any]:
    path = hf_dir / CONFIG
    if not path.is_file():
        raise ConversionError(f"{hf_dir} has no {CONFIG}: not an HF model directory")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConversionError(f"{path} is not valid JSON: {e}") from None


def arch_from_config(config: dict[str, Any], where: Path) -> LlamaArch:
    if config.get("model_type", "llama") != "llama":
        raise ConversionError(f"{where}/{CONFIG} has model_type={config.get('model_type')!r}; only 'llama' "
                              f"(Llama-3 family) is supported")
    try:
        return LlamaArch.from_hf_config(config)
    except KeyError as e:
        raise ConversionError(f"{where}/{CONFIG}: {e.args[0]}") from None


@dataclass(frozen=True)
class TensorInfo:
    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    offset: int  # absolute byte offset of the data in ``file``

    @property
    def nbytes(self) -> int:
        return nbytes(self.dtype, self.shape)


class HFCheckpoint:
    """An HF safetensors checkpoint, validated on open, read block by block with pread.

    Validation (before anything is written): config.json parses into a Llama architecture; the index
    (or the single ``model.safetensors``) names files that exist; every shard's header is complete and
    its tensors fit in the file (a truncated shard fails here); the index and the shard headers
    agree on which file holds what. Reads use pread rather than safetensors' mmap, so a block is in
    memory only while the tensor holding it lives (a mapped shard keeps every page it touched).
    """

    def __init__(self, hf_dir: str | Path):
        self.dir = Path(hf_dir)
        if not self.dir.is_dir():
            raise ConversionError(f"HF model directory {self.dir} does not exist")
        self.config = read_config(self.dir)
        self.arch = arch_from_config(self.config, self.dir)
        self._fds: dict[Path, int] = {}
        self.tensors = self._scan()

    def _scan(self) -> dict[str, TensorInfo]:
        index_path = self.dir / INDEX
        if index_path.is_file():
            try:
                weight_map: dict[str, str] = json.loads(index_path.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ConversionError(f"{index_path} is not a valid safetensors index ({e!r})") from None
            files = sorted(set(weight_map.values()))
        elif (self.dir / SINGLE).is_file():
            weight_map, files = {}, [SINGLE]
        else:
            other = sorted(p.name for p in self.dir.glob("*.bin")) + sorted(p.name for p in self.dir.glob("*.pt"))
            hint = (f"; found {other}: re-save with save_pretrained(safe_serialization=True)" if other else "")
            raise ConversionError(f"{self.dir} has neither {INDEX} nor {SINGLE}{hint}")
        missing = [f for f in files if not (self.dir / f).is_file()]
        if missing:
            examples = {f: sorted(k for k, v in weight_map.items() if v == f)[:2] for f in missing}
            raise ConversionError(f"{index_path} names shard file(s) missing from {self.dir}: " + "; ".join(
                f"{f} (holding e.g. {', '.join(ex)})" for f, ex in examples.items()) + "; re-download the model")
        tensors: dict[str, TensorInfo] = {}
        for f in files:
            for name, info in read_safetensors_header(self.dir / f).items():
                if name in tensors:
                    raise ConversionError(f"tensor {name} is in both {tensors[name].file.name} and {f}")
                tensors[name] = info
        for name, f in weight_map.items():
            if name not in tensors or tensors[name].file.name != f:
                where = tensors[name].file.name if name in tensors else "no shard"
                raise ConversionError(f"{index_path} maps {name} to {f}, but it is in {where}: index and "
                                      f"shards disagree; re-download the model")
        if weight_map:
            unindexed = sorted(set(tensors) - set(weight_map))
            if unindexed:
                raise ConversionError(f"{index_path} does not list {unindexed[:3]} found in the shards: index "
                                      f"and shards disagree; re-download the model")
        return tensors

    def source(self, name: str) -> FileSource:
        """A tensor's location, to be read whole or by rows."""
        info = self.tensors[name]
        if info.file not in self._fds:
            self._fds[info.file] = os.open(info.file, os.O_RDONLY)
        return FileSource(name, info.shape, info.dtype, self._fds[info.file], info.offset, info.file)

    def read(self, name: str) -> torch.Tensor:
        return self.source(name).read()

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> "HFCheckpoint":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_safetensors_header(path: Path) -> dict[str, TensorInfo]:
    """Tensor names, dtypes, shapes and offsets of a safetensors file, checked against its size."""
    def bad(why: str) -> ConversionError:
        return ConversionError(f"shard {path} is truncated or corrupt ({why}); re-download it")

    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise bad("no header")
        n = struct.unpack("<Q", head)[0]
        if n > min(size - 8, 100 << 20):
            raise bad(f"header length {n} exceeds the file")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise bad(f"header is not JSON: {e}") from None
    header.pop("__metadata__", None)
    base, out, spans = 8 + n, {}, []
    for name, meta in header.items():
        if not isinstance(meta, dict) or meta.get("dtype") not in _ST_DTYPES:
            raise bad(f"{name} has unsupported dtype {meta.get('dtype') if isinstance(meta, dict) else meta!r}")
        try:
            dtype = _ST_DTYPES[meta["dtype"]]
            shape = tuple(int(x) for x in meta["shape"])
            begin, end = (int(x) for x in meta["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise bad(f"entry {name!r} is malformed") from None
        info = TensorInfo(path, dtype, shape, base + begin)
        if end - begin != info.nbytes:
            raise bad(f"{name} spans {end - begin} bytes but its shape needs {info.nbytes}")
        out[name] = info
        spans.append((begin, end))
    data_end = max((e for _, e in spans), default=0)
    if base + data_end > size:
        raise bad(f"the header needs {base + data_end} bytes, the file has {size}")
    return out


# ------------------------------------------------------------------------------------------ writing


@dataclass(frozen=True)
class PlannedTensor:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return nbytes(self.dtype, self.shape)


def plan_shards(tensors: list[PlannedTensor], max_shard_bytes: int) -> list[list[PlannedTensor]]:
    """Greedy split in order, as transformers' save_pretrained does (a tensor never spans shards)."""
    shards: list[list[PlannedTensor]] = [[]]
    size = 0
    for t in tensors:
        if shards[-1] and size + t.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += t.nbytes
    return shards


def shard_file_names(n: int) -> list[str]:
    if n == 1:
        return [SINGLE]
    return [f"model-{k + 1:05d}-of-{n:05d}.safetensors" for k in range(n)]


class _EntrySink:
    """Receives one safetensors tensor's bytes, in order."""

    def __init__(self, writer: "HFWeightsWriter", planned: PlannedTensor):
        self._writer, self._planned, self._done = writer, planned, 0

    def write(self, block: torch.Tensor) -> None:
        view = memoryview(block.contiguous().view(-1).view(torch.uint8).numpy())
        if self._done + len(view) > self._planned.nbytes:
            raise ConversionError(f"internal: {self._planned.name}: more bytes than its shape holds")
        f, done = self._writer._file, 0
        while done < len(view):
            done += f.write(view[done:])
        self._done += len(view)
        if self._writer.on_bytes:
            self._writer.on_bytes(len(view))

    def close(self) -> None:
        if self._done != self._planned.nbytes:
            raise ConversionError(f"internal: {self._planned.name}: got {self._done} of {self._planned.nbytes} bytes")


class HFWeightsWriter:
    """Write planned tensors (known in advance) as safetensors shards, tensor by tensor, block by block.

    The headers are computed from the plan, so each file is written front to back; tensors must be
    opened in plan order. One shard is ``model.safetensors``; more get ``model-0000k-of-0000N`` names
    and an index (transformers' conventions).
    """

    def __init__(self, out_dir: Path, planned: list[PlannedTensor], max_shard_bytes: int, on_bytes=None):
        self.out_dir = out_dir
        self.shards = plan_shards(planned, max_shard_bytes)
        self.files = shard_file_names(len(self.shards))
        self._order = [(k, t) for k, shard in enumerate(self.shards) for t in shard]
        self._next = 0
        self._file = None
        self._file_index = -1
        self.on_bytes = on_bytes
        self.on_file = None  # called with the name of each file as it is started

    def open_tensor(self, name: str, dtype: torch.dtype, shape: tuple[int, ...]) -> _EntrySink:
        if self._next >= len(self._order):
            raise ConversionError(f"internal: unexpected extra tensor {name}")
        k, want = self._order[self._next]
        if (name, dtype, tuple(shape)) != (want.name, want.dtype, want.shape):
            raise ConversionError(f"internal: expected {want.name} {want.dtype} {list(want.shape)}, got "
                                  f"{name} {dtype} {list(shape)}")
        if k != self._file_index:
            self._start_file(k)
        self._next += 1
        return _EntrySink(self, want)

    def _start_file(self, k: int) -> None:
        if self._file is not None:
            self._file.close()
        self._file_index = k
        header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for t in self.shards[k]:
            header[t.name] = {"dtype": _ST_NAMES[t.dtype], "shape": list(t.shape),
                              "data_offsets": [offset, offset + t.nbytes]}
            offset += t.nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        self._file = open(self.out_dir / self.files[k], "wb", buffering=0)
        head = struct.pack("<Q", len(raw)) + raw
        done = 0
        while done < len(head):
            done += self._file.write(head[done:])
        if self.on_file:
            self.on_file(self.files[k])

    def close(self) -> None:
        """Finish the last file and write the index (more than one shard)."""
        if self._next != len(self._order):
            missing = [t.name for _, t in self._order[self._next:]]
            raise ConversionError(f"internal: tensors never produced: {missing[:3]}")
        if self._file is not None:
            self._file.close()
            self._file = None
        if len(self.files) > 1:
            write_index(self.out_dir, self.shards, self.files)

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def write_index(out_dir: Path, shards: list[list[PlannedTensor]], names: list[str]) -> None:
    total = sum(t.nbytes for shard in shards for t in shard)
    params = sum(t.nbytes // t.dtype.itemsize for shard in shards for t in shard)
    weight_map = {t.name: f for shard, f in zip(shards, names) for t in shard}
    index = {"metadata": {"total_parameters": params, "total_size": total}, "weight_map": weight_map}
    (out_dir / INDEX).write_text(json.dumps(index, indent=2) + "\n")


def write_config(out_dir: Path, source_config: dict[str, Any], dtype: torch.dtype) -> None:
    """The source model's config.json with the exported dtype as ``torch_dtype`` (and ``dtype``).

    MindSpeed's mg->hf reads ``torch_dtype`` (and falls back to float32 without it); transformers
    4.57 writes only ``dtype``. Both are set when the source has ``dtype``; ``torch_dtype`` always.
    """
    config = dict(source_config)
    name = str(dtype).removeprefix("torch.")
    config["torch_dtype"] = name
    if "dtype" in config:
        config["dtype"] = name
    (out_dir / CONFIG).write_text(json.dumps(config, indent=2) + "\n")


def copy_tokenizer_files(source_dir: Path, out_dir: Path) -> list[str]:
    """Copy tokenizer and generation-config files byte for byte (never re-saved)."""
    copied = []
    for name in TOKENIZER_FILES:
        src = source_dir / name
        if src.is_file():
            shutil.copyfile(src, out_dir / name)
            copied.append(name)
    return copied
