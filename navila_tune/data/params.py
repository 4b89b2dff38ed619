"""Settings of one preprocessing run and their validation (pure Python: no heavy imports)."""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from .errors import DataError

# The handler the native backend implements (MindSpeed-LLM's name for the Alpaca column layout).
NATIVE_HANDLERS = ("AlpacaStyleInstructionHandler",)
# Every handler class MindSpeed-LLM 2.3.0 defines (mindspeed_llm/tasks/preprocess/data_handler.py).
# MindSpeed silently falls back to GeneralPretrainHandler for any other name; we refuse instead.
MINDSPEED_HANDLERS = (
    "GeneralPretrainHandler",
    "AlpacaPretrainHandler",
    "LlamaFactoryInstructionHandler",
    "AlpacaStyleInstructionHandler",
    "SharegptStyleInstructionHandler",
    "HunyuanInstructionHandler",
    "AlpacaStylePairwiseHandler",
    "SharegptStylePairwiseHandler",
    "AlpacaStyleProcessRewardHandler",
    "PPOAlpacaStyleInstructionHandler",
    "R1AlpacaStyleInstructionHandler",
    "R1SharegptStyleInstructionHandler",
    "GeneralInstructionHandler",
    "BelleMultiTurnInstructionHandler",
    "MOSSMultiTurnHandler",
    "MOSSInstructionHandler",
    "LeetcodePythonInstructionHandler",
    "StackOverflowPythonPretrainHandler",
)
MAP_KEYS = ("prompt", "query", "response", "system", "history")
REQUIRED_MAP_KEYS = ("prompt", "response")
OVERLONG_CHOICES = ("mindspeed", "truncate", "fail")
MIN_SEQ_LENGTH = 4


def default_map_keys() -> dict[str, str | None]:
    return {"prompt": "instruction", "query": "input", "response": "output", "system": None, "history": None}


@dataclass(kw_only=True)
class PreprocessParams:
    """One preprocessing run. Field names mirror the config's ``data`` group (schema ``DataConfig``)."""

    input: str  # file or folder; never a hub name
    tokenizer_dir: str
    output_prefix: str  # files are PREFIX_packed_{input_ids,attention_mask,labels}_document.{bin,idx}
    seq_length: int
    prompt_type: str = "llama3"
    handler: str = "AlpacaStyleInstructionHandler"
    map_keys: dict = field(default_factory=default_map_keys)
    pack: bool = False
    neat_pack: bool = False
    append_eod: bool = False
    enable_thinking: bool | None = None
    workers: int = 1
    overlong: str = "mindspeed"  # mindspeed | truncate | fail
    max_bad_row_fraction: float = 0.01
    answer_marker: str | None = "The next action is"
    progress: bool = True
    cache_dir: str | None = None  # datasets' cache for the loaded input (None: datasets' default)

    @classmethod
    def from_config(cls, data: Mapping[str, Any], *, tokenizer_dir: str, prompt_type: str,
                    output_prefix: str, **overrides: Any) -> "PreprocessParams":
        """Build from a resolved ``data`` group (dict or DictConfig) plus the model group's two facts."""
        names = {f.name for f in fields(cls)}
        values = {k: data[k] for k in data if k in names}
        values["map_keys"] = dict(values.get("map_keys") or default_map_keys())
        values.update(tokenizer_dir=tokenizer_dir, prompt_type=prompt_type, output_prefix=output_prefix)
        values.update(overrides)
        return cls(**values)

    def resolved_map_keys(self) -> dict[str, str | None]:
        keys = {k: None for k in MAP_KEYS}
        keys.update({k: (v or None) for k, v in dict(self.map_keys).items()})
        return keys

    def problems(self) -> list[str]:
        """Every problem with these settings (paths included), each naming the key, value and fix."""
        out: list[str] = []
        out += _handler_problems(self.handler)
        out += _map_key_problems(self.map_keys)
        if isinstance(self.seq_length, bool) or not isinstance(self.seq_length, int) \
                or self.seq_length < MIN_SEQ_LENGTH:
            out.append(f"data.seq_length={self.seq_length!r}: must be an integer >= {MIN_SEQ_LENGTH}")
        if self.overlong not in OVERLONG_CHOICES:
            out.append(f"data.overlong={self.overlong!r}: choose one of {', '.join(OVERLONG_CHOICES)}")
        if self.neat_pack and not self.pack:
            out.append("data.neat_pack=true needs data.pack=true (as MindSpeed's --neat-pack needs --pack)")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            out.append(f"data.workers={self.workers!r}: must be an integer >= 1")
        if not isinstance(self.max_bad_row_fraction, (int, float)) or isinstance(self.max_bad_row_fraction, bool) \
                or not 0.0 <= self.max_bad_row_fraction <= 1.0:
            out.append(f"data.max_bad_row_fraction={self.max_bad_row_fraction!r}: must be a number in [0, 1]")
        if self.enable_thinking not in (None, True, False):
            out.append(f"data.enable_thinking={self.enable_thinking!r}: must be true, false or null")
        if self.answer_marker is not None and not isinstance(self.answer_marker, str):
            out.append(f"data.answer_marker={self.answer_marker!r}: must be a string or null")
        out += _path_problems(self)
        return out

    def check(self) -> None:
        problems = self.problems()
        if problems:
            raise DataError.collect(problems)


def _handler_problems(handler: str) -> list[str]:
    if handler in NATIVE_HANDLERS:
        return []
    if handler in MINDSPEED_HANDLERS:
        return [f"data.handler={handler!r} is a MindSpeed-LLM handler the native backend does not implement; "
                f"native handlers: {', '.join(NATIVE_HANDLERS)} (or run preprocess with backend=mindspeed)"]
    close = difflib.get_close_matches(str(handler), MINDSPEED_HANDLERS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return [f"data.handler={handler!r} is not a known handler (MindSpeed-LLM would silently fall back to "
            f"GeneralPretrainHandler and write a pretraining set).{hint} Known handlers: "
            f"{', '.join(NATIVE_HANDLERS)} (native); MindSpeed-LLM also has: "
            f"{', '.join(h for h in MINDSPEED_HANDLERS if h not in NATIVE_HANDLERS)}"]


def _map_key_problems(map_keys: Any) -> list[str]:
    if not isinstance(map_keys, Mapping):
        return [f"data.map_keys={map_keys!r}: must be a mapping of {'/'.join(MAP_KEYS)} to column names"]
    out = []
    unknown = [k for k in map_keys if k not in MAP_KEYS]
    if unknown:
        out.append(f"data.map_keys has unknown key(s) {unknown}; known keys: {', '.join(MAP_KEYS)}")
    for key, column in map_keys.items():
        if column is not None and not isinstance(column, str):
            out.append(f"data.map_keys.{key}={column!r}: must be a column name (string) or null")
    for key in REQUIRED_MAP_KEYS:
        if not map_keys.get(key, default_map_keys()[key]):
            out.append(f"data.map_keys.{key} is empty: it must name the column holding the {key}")
    return out


def _path_problems(p: PreprocessParams) -> list[str]:
    out = []
    if not p.input or not os.path.exists(p.input):
        out.append(f"data.input={p.input!r} does not exist (navila_tune never downloads datasets from the hub; "
                   f"pass a local file or folder)")
    if not p.tokenizer_dir or not os.path.isdir(p.tokenizer_dir):
        out.append(f"tokenizer_dir={p.tokenizer_dir!r} is not a directory (model.tokenizer_dir must hold "
                   f"tokenizer.json / tokenizer_config.json)")
    prefix = str(p.output_prefix or "")
    if not prefix or not os.path.basename(prefix) or os.path.isdir(prefix):
        out.append(f"output_prefix={p.output_prefix!r}: must be a path prefix such as /data/out/alpaca "
                   f"(the files are PREFIX_packed_*_document.bin/.idx), not a folder")
    elif p.input and os.path.isdir(p.input):
        inside = os.path.commonpath([os.path.abspath(p.input), os.path.abspath(os.path.dirname(prefix) or ".")])
        if inside == os.path.abspath(p.input):
            out.append(f"output_prefix={p.output_prefix!r} lies inside the input folder {p.input!r}: the next "
                       f"run would read the outputs as data; write them elsewhere")
    return out
