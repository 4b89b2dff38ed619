"""Checks of an exported HF directory that read its files (reference §4.2-4.4), without running the model.

Each check takes an ``ExportDir`` (the directory, its parsed JSON files and what the model group
expects) and returns one ``Item``. The tensor checks read the shards once, tensor by tensor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

from navila_tune.arch import HF_CONSTANTS, LlamaArch
from navila_tune.artifacts import TOKENIZER_FILES as COPIED_FILES  # compared byte for byte with the source
from navila_tune.handoff import facts
from navila_tune.handoff.files import sha256
from navila_tune.handoff.report import Item, failed, passed, skipped, warned

CONFIG, GENERATION_CONFIG = "config.json", "generation_config.json"
INDEX, SINGLE = "model.safetensors.index.json", "model.safetensors"
TORCH_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


class Unreadable(Exception):
    """A file a check needs is missing or malformed; the message says which."""


@dataclass
class ExportDir:
    """An exported LLM directory and what it should be."""

    path: Path
    arch: LlamaArch | None = None  # the model group's architecture
    dtype: str | None = None  # bf16 | fp16 | fp32: the dtype the weights were exported in
    source_tokenizer_dir: Path | None = None  # where the tokenizer files were copied from
    _json: dict[str, Any] = field(default_factory=dict, repr=False)

    def json_file(self, name: str) -> dict[str, Any]:
        if name not in self._json:
            path = self.path / name
            if not path.is_file():
                raise Unreadable(f"{path} is missing")
            try:
                self._json[name] = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise Unreadable(f"{path} is not valid JSON ({e})") from None
        return self._json[name]

    @property
    def config(self) -> dict[str, Any]:
        return self.json_file(CONFIG)

    @cached_property
    def vocab_size(self) -> int | None:
        if self.arch is not None:
            return self.arch.vocab_size
        try:
            return int(self.config["vocab_size"])
        except (Unreadable, KeyError, TypeError, ValueError):
            return None

    @cached_property
    def token_ids(self) -> dict[str, int]:
        """Ids of the template tokens as tokenizer.json defines them (added tokens, then the BPE vocab)."""
        from navila_tune.handoff.generation import template_token_ids

        try:
            return template_token_ids(self.path)
        except (OSError, ValueError) as e:
            raise Unreadable(f"{self.path}/tokenizer.json cannot be read ({e})") from None

    @cached_property
    def tensors(self) -> "TensorScan":
        return TensorScan.of(self.path)

    @cached_property
    def navila_tokenizer(self):
        """The tokenizer as NaVILA's ``build_llm_and_tokenizer`` loads it (raises what the loader raises)."""
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(self.path), local_files_only=True, **facts.TOKENIZER_KWARGS)


Check = Callable[[ExportDir], Item]


# ------------------------------------------------------------------------------------------ paths
def check_directory_name(d: ExportDir) -> Item:
    """NaVILA picks the model class by substring of the path (``llava/train/train.py``)."""
    path = str(d.path.resolve())
    bad = facts.forbidden_substrings(path)
    if bad:
        return failed("directory_name", f"the path {path} contains {bad}: NaVILA would load it as another model "
                      f"class (it tests {list(facts.FORBIDDEN_PATH_SUBSTRINGS)} in --model_name_or_path)",
                      f"move or rename the export (and the folders above it) so no component contains {bad}")
    return passed("directory_name", f"no {'/'.join(facts.FORBIDDEN_PATH_SUBSTRINGS)} in {path} (keep it so in the "
                  f"path you give NaVILA)")


# ------------------------------------------------------------------------------------------ config.json
def check_config(d: ExportDir) -> Item:
    cfg = d.config
    problems: list[str] = []
    for key, want in HF_CONSTANTS.items():
        if key == "rope_scaling" or (key not in cfg and key in ("attention_bias", "mlp_bias", "pretraining_tp")):
            continue  # absent: transformers' defaults are the Llama-3 values; rope_scaling just below
        if cfg.get(key, "<missing>") != want:
            problems.append(f"{key} is {json.dumps(cfg.get(key, '<missing>'))}, expected {json.dumps(want)}")
    if cfg.get("rope_scaling") is not None:
        problems.append(f"rope_scaling is {json.dumps(cfg['rope_scaling'])}: Llama-3 has none, and transformers "
                        f"4.37.2 rejects Llama-3.1-style rope_type entries")
    if cfg.get("tie_word_embeddings", False) is not False:
        problems.append("tie_word_embeddings is true; Llama-3-8B has a separate lm_head")
    if "max_position_embeddings" not in cfg:
        problems.append("max_position_embeddings is missing")
    torch_dtype = cfg.get("torch_dtype")
    if torch_dtype not in TORCH_DTYPES.values():
        problems.append(f"torch_dtype is {json.dumps(torch_dtype)}; transformers 4.37.2 reads torch_dtype "
                        f"(4.57 writes only 'dtype'), expected one of {sorted(TORCH_DTYPES.values())}")
    elif d.dtype and torch_dtype != TORCH_DTYPES[d.dtype]:
        problems.append(f"torch_dtype is {torch_dtype!r} but the weights were exported as {TORCH_DTYPES[d.dtype]!r}")
    if d.arch is not None:
        try:
            found = LlamaArch.from_hf_config(cfg)
        except KeyError as e:
            problems.append(str(e.args[0]))
        else:
            problems += [f"{name} is {got!r}, the model group says {want!r}"
                         for name, want, got in d.arch.mismatches(found)]
    if problems:
        return failed("config", "config.json: " + "; ".join(problems),
                      "export from the HF directory the model group describes (model.hf_dir), and fix config.json "
                      "there: rope_scaling null, tie_word_embeddings false, torch_dtype set")
    maxpos = cfg["max_position_embeddings"]
    if maxpos < facts.MODEL_MAX_LENGTH:
        return warned("config", f"config.json values are right, but max_position_embeddings={maxpos} < NaVILA's "
                      f"model_max_length {facts.MODEL_MAX_LENGTH}: NaVILA will add linear rope_scaling itself",
                      "expected for tiny test models; Llama-3-8B has 8192", max_position_embeddings=maxpos)
    return passed("config", f"llama / LlamaForCausalLM, rope_scaling null, untied, torch_dtype {torch_dtype}, "
                  f"max_position_embeddings {maxpos}" + (", matches the model group" if d.arch else ""))


def check_generation_config(d: ExportDir) -> Item:
    try:
        gen = d.json_file(GENERATION_CONFIG)
    except Unreadable as e:
        return failed("generation_config", str(e) + ": HF then derives eos from config.json, which for the Instruct "
                      "config is <|eot_id|> only, so the model would run on past the <|end_of_text|> NaVILA trains",
                      "copy generation_config.json from the source model, or run `python -m navila_tune.handoff "
                      "finalize DIR`, which writes eos [<|end_of_text|>, <|eot_id|>]")
    ids = d.token_ids
    want = {t: ids[t] for t in (facts.END_OF_TEXT, facts.EOT) if t in ids}
    eos = gen.get("eos_token_id")
    eos_list = eos if isinstance(eos, list) else [] if eos is None else [eos]
    lacking = {t: i for t, i in want.items() if i not in eos_list}
    problems = []
    if lacking:
        problems.append(f"eos_token_id {json.dumps(eos)} lacks " + ", ".join(f"{t} ({i})" for t, i in lacking.items()))
    bos = ids.get(facts.BEGIN_OF_TEXT)
    if "bos_token_id" in gen and bos is not None and gen["bos_token_id"] != bos:
        problems.append(f"bos_token_id is {gen['bos_token_id']}, <|begin_of_text|> is {bos}")
    if problems:
        return failed("generation_config", "generation_config.json: " + "; ".join(problems) + ". NaVILA stops "
                      "generation on these ids; its SFT targets end with <|end_of_text|>",
                      f"set eos_token_id to {json.dumps(sorted(set(eos_list) | set(want.values())))} (or run "
                      f"`python -m navila_tune.handoff finalize DIR`)")
    return passed("generation_config", f"eos_token_id {json.dumps(eos)} includes <|end_of_text|> and <|eot_id|>",
                  eos_token_id=eos)


# ------------------------------------------------------------------------------------------ tokenizer
def check_tokenizer_files(d: ExportDir) -> Item:
    problems, fixes = [], []
    missing = [f for f in facts.REQUIRED_TOKENIZER_FILES if not (d.path / f).is_file()]
    if missing:
        problems.append(f"missing {missing}")
        fixes.append("copy the tokenizer files from the source model")
    if "tokenizer_config.json" not in missing:
        cls = d.json_file("tokenizer_config.json").get("tokenizer_class")
        if cls != facts.TOKENIZER_CLASS:
            problems.append(f"tokenizer_config.json names tokenizer_class {cls!r}: NaVILA loads with use_fast=False, "
                            f"which for anything but {facts.TOKENIZER_CLASS} looks for a SentencePiece "
                            f"tokenizer.model that Llama-3 does not have")
            fixes.append(f"ship Meta's tokenizer_config.json (tokenizer_class {facts.TOKENIZER_CLASS})")
    if "tokenizer.json" not in missing:
        merges = (d.json_file("tokenizer.json").get("model") or {}).get("merges") or []
        if merges and not isinstance(merges[0], str):
            problems.append("tokenizer.json stores BPE merges as pairs (written by tokenizers >= 0.20); tokenizers "
                            "0.15 fails on it with 'data did not match any variant of untagged enum ModelWrapper'")
            fixes.append("copy the original tokenizer.json instead of re-saving it")
    differing = []
    if d.source_tokenizer_dir is not None:
        for name in COPIED_FILES:
            src = d.source_tokenizer_dir / name
            if src.is_file() and (d.path / name).is_file() and sha256(src) != sha256(d.path / name):
                differing.append(name)
        if differing:
            problems.append(f"{differing} differ from {d.source_tokenizer_dir} (re-saved instead of copied)")
            fixes.append(f"copy them byte for byte from {d.source_tokenizer_dir}; never save_pretrained a tokenizer")
    if problems:
        return failed("tokenizer_files", "; ".join(problems), "; ".join(dict.fromkeys(fixes)), differing=differing)
    same = f", byte-identical to {d.source_tokenizer_dir}" if d.source_tokenizer_dir else ""
    return passed("tokenizer_files", f"{', '.join(facts.REQUIRED_TOKENIZER_FILES)} present, {facts.TOKENIZER_CLASS}, "
                  f"merges as strings (tokenizers 0.15 reads them){same}")


def check_tokenizer(d: ExportDir) -> Item:
    try:
        tok = d.navila_tokenizer
    except Exception as e:  # noqa: BLE001 - any loader error is the finding
        return failed("tokenizer", f"AutoTokenizer.from_pretrained(use_fast=False, legacy=False, padding_side='right',"
                      f" model_max_length=4096) fails: {e}", "ship the source model's tokenizer files unchanged")
    problems = []
    ids: dict[str, int] = {}
    for token in facts.TEMPLATE_TOKENS:
        tid = tok.convert_tokens_to_ids(token)
        enc = tok.encode(token, add_special_tokens=False)
        if not isinstance(tid, int) or tid == tok.unk_token_id or enc != [tid]:
            problems.append(f"{token} encodes to {enc}, not one id")
        else:
            ids[token] = tid
    vocab = d.vocab_size
    if vocab is not None and vocab >= facts.LLAMA3_VOCAB:
        wrong = {t: i for t, i in ids.items() if facts.LLAMA3_IDS[t] != i}
        if wrong:
            problems.append(f"special ids {wrong} differ from Llama-3's {facts.LLAMA3_IDS}")
    bos = ids.get(facts.BEGIN_OF_TEXT)
    with_bos, plain = tok("hi").input_ids, tok("hi", add_special_tokens=False).input_ids
    if bos is not None and (not with_bos or with_bos[0] != bos or with_bos.count(bos) != 1 or bos in plain):
        problems.append(f"BOS behaviour differs from Meta's: tokenizer('hi') gives {with_bos} (expected one leading "
                        f"{bos}), add_special_tokens=False gives {plain}")
    prompt_ids = tok(facts.llama_3_prompt([(0, "hi"), (1, None)])).input_ids
    beyond = tok.convert_ids_to_tokens(list(range(vocab, len(tok)))) if vocab is not None else []
    notes = []
    if beyond and set(beyond) <= set(facts.VILA_TOKENIZER_ONLY):
        notes.append(f"{beyond} lie beyond vocab_size {vocab}: VILA adds them to the tokenizer only")
    elif beyond:
        problems.append(f"len(tokenizer) = {len(tok)} exceeds vocab_size {vocab}: {beyond[:4]} have no embedding "
                        f"row")
    cfg = d.config
    if bos is not None and cfg.get("bos_token_id") not in (None, bos):
        problems.append(f"config.json bos_token_id {cfg['bos_token_id']} is not <|begin_of_text|> ({bos})")
    cfg_eos = cfg.get("eos_token_id")
    allowed = {ids.get(facts.END_OF_TEXT), ids.get(facts.EOT)} - {None}
    if cfg_eos is not None and not set(cfg_eos if isinstance(cfg_eos, list) else [cfg_eos]) <= allowed:
        problems.append(f"config.json eos_token_id {cfg_eos} is not <|end_of_text|>/<|eot_id|> {sorted(allowed)}")
    if problems:
        return failed("tokenizer", "; ".join(problems),
                      "ship the source Llama-3 tokenizer unchanged (tokenizer.json with its TemplateProcessing "
                      "post-processor) and a config.json whose bos/eos ids are its ids")
    message = (f"{type(tok).__name__}, {len(tok)} tokens, special ids {ids}, one BOS prepended (the llama_3 prompt "
               f"starts {prompt_ids[:2]}: NaVILA's double BOS)")
    if notes:
        return warned("tokenizer", message + "; " + "; ".join(notes), "nothing to do if the source checkpoint "
                      "ships them too (NaVILA never embeds them)", ids=ids, len=len(tok))
    return passed("tokenizer", message, ids=ids, eos_shipped=tok.eos_token, len=len(tok))


def check_pad_unk(d: ExportDir) -> Item:
    try:
        tok = d.navila_tokenizer
    except Exception as e:  # noqa: BLE001
        return skipped("pad_unk", f"tokenizer does not load ({e})", "see the tokenizer item")
    template_ids = {tok.convert_tokens_to_ids(t) for t in facts.TEMPLATE_TOKENS}
    specials = {i for i, t in tok.added_tokens_decoder.items() if t.special}
    text_ids = set(tok(facts.llama_3_prompt([(0, "Go to the red door."), (1, "The next action is stop.")])).input_ids)
    problems, found = [], {}
    for role in ("pad", "unk"):
        token = getattr(tok, f"{role}_token")
        if token is None:
            continue
        tid = tok.convert_tokens_to_ids(token)
        found[role] = (token, tid)
        if tid in template_ids or tid in text_ids or tid not in specials:
            problems.append(f"{role}_token {token!r} (id {tid}) is a token that occurs in text; NaVILA's collator "
                            f"masks every input id equal to the pad id (attention_mask = input_ids != pad_id)")
        elif d.vocab_size is not None and tid >= d.vocab_size:
            problems.append(f"{role}_token {token!r} has id {tid} >= vocab_size {d.vocab_size}: no embedding row")
    if problems:
        return failed("pad_unk", "; ".join(problems), "leave pad_token and unk_token unset (NaVILA adds [PAD]), or "
                      "use a dedicated special [PAD] token with its own embedding row")
    if not found:
        return passed("pad_unk", "pad_token and unk_token unset (NaVILA adds [PAD] and resizes the embeddings)")
    return passed("pad_unk", "; ".join(f"{r}_token {t!r} is its own special token (id {i}) with an embedding row"
                                       for r, (t, i) in found.items()))


# ------------------------------------------------------------------------------------------ weights
@dataclass
class TensorInfo:
    file: str
    dtype: str
    shape: tuple[int, ...]


@dataclass
class TensorScan:
    """Where every tensor is, per the shard headers and the index, and what is wrong with that."""

    path: Path
    tensors: dict[str, TensorInfo]
    index_problems: list[str]
    files: list[str]

    @classmethod
    def of(cls, path: Path) -> "TensorScan":
        from navila_tune.convert.errors import ConversionError
        from navila_tune.convert.hf_files import read_safetensors_header

        problems: list[str] = []
        weight_map: dict[str, str] = {}
        if (path / INDEX).is_file():
            try:
                weight_map = json.loads((path / INDEX).read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                problems.append(f"{INDEX} is not a safetensors index ({e!r})")
            files = sorted(set(weight_map.values()))
            on_disk = sorted(p.name for p in path.glob("*.safetensors"))
            stray = [f for f in on_disk if f not in files]
            if stray:
                problems.append(f"shard file(s) {stray} are not named by {INDEX}")
        elif (path / SINGLE).is_file():
            files = [SINGLE]
        else:
            shards = sorted(p.name for p in path.glob("*.safetensors"))
            problems.append(f"neither {INDEX} nor {SINGLE}" + (f" (found {shards} without an index)" if shards else ""))
            files = []
        tensors: dict[str, TensorInfo] = {}
        for f in files:
            if not (path / f).is_file():
                held = sorted(k for k, v in weight_map.items() if v == f)
                problems.append(f"{INDEX} names {f}, which is missing (it holds {len(held)} tensors, e.g. "
                                f"{held[:2]})")
                continue
            try:
                header = read_safetensors_header(path / f)
            except ConversionError as e:
                problems.append(str(e))
                continue
            for name, info in header.items():
                if name in tensors:
                    problems.append(f"{name} is in both {tensors[name].file} and {f}")
                tensors[name] = TensorInfo(f, str(info.dtype).removeprefix("torch."), info.shape)
        if weight_map:
            wrong = [n for n, f in weight_map.items() if n in tensors and tensors[n].file != f]
            unmapped = sorted(set(tensors) - set(weight_map))
            if wrong:
                problems.append(f"{INDEX} maps {wrong[:3]} to other files than the shards hold them in")
            if unmapped:
                problems.append(f"{INDEX} does not list {unmapped[:3]} ({len(unmapped)} tensors in the shards)")
        return cls(path, tensors, problems, files)

    def read(self, name: str):
        from safetensors import safe_open

        with safe_open(str(self.path / self.tensors[name].file), framework="pt") as f:
            return f.get_tensor(name)


def check_index(d: ExportDir) -> Item:
    scan = d.tensors
    if scan.index_problems:
        return failed("safetensors_index", "; ".join(scan.index_problems),
                      "re-run the export (a shard is missing or the index does not match the shards)")
    where = f"{INDEX} matches {len(scan.files)} shards" if len(scan.files) > 1 else f"one {SINGLE}"
    return passed("safetensors_index", f"{where}, {len(scan.tensors)} tensors")


def _expected_shapes(arch: LlamaArch, vocab: int) -> dict[str, tuple[int, ...]]:
    from navila_tune.convert import weights

    ctx = weights.ShardContext(arch, 1, vocab, vocab)
    out: dict[str, tuple[int, ...]] = {}
    seen = set()
    for _, entry, layer in weights.hf_order(arch.num_layers):
        if (entry, layer) in seen:
            continue
        seen.add((entry, layer))
        out.update(zip(entry.hf_names(layer), entry.hf_shapes(ctx)))
    return out


def _arch_of(d: ExportDir) -> LlamaArch:
    return d.arch if d.arch is not None else LlamaArch.from_hf_config(d.config)


def check_tensor_names(d: ExportDir) -> Item:
    from navila_tune.convert import weights

    arch = _arch_of(d)
    expected = weights.expected_hf_names(arch.num_layers)
    present = [n for n in d.tensors.tensors if not weights.is_ignored_hf(n)]
    missing = [n for n in expected if n not in d.tensors.tensors]
    unexpected = sorted(set(present) - set(expected))
    if missing or unexpected:
        prefixed = [n for n in unexpected if n.startswith(("module.", "llm.", "language_model."))]
        hint = f"; {prefixed[:2]} carry a wrapper prefix: strip it" if prefixed else ""
        return failed("tensor_names", f"{len(present)} tensors, expected {len(expected)} HF Llama names: missing "
                      f"{missing[:4]}{'...' if len(missing) > 4 else ''}, unexpected {unexpected[:4]}"
                      f"{'...' if len(unexpected) > 4 else ''}{hint}",
                      "export with the Llama weight table (model.embed_tokens, model.layers.N..., model.norm, "
                      "lm_head) and a separate lm_head.weight", missing=missing, unexpected=unexpected)
    return passed("tensor_names", f"{len(expected)} tensors with HF Llama names ({arch.num_layers} layers, "
                  f"separate lm_head)")


def check_tensor_shapes(d: ExportDir) -> Item:
    arch = _arch_of(d)
    vocab = arch.vocab_size
    want = _expected_shapes(arch, vocab)
    wrong = [f"{n} {list(d.tensors.tensors[n].shape)} (expected {list(s)})" for n, s in want.items()
             if n in d.tensors.tensors and d.tensors.tensors[n].shape != s
             and n not in ("model.embed_tokens.weight", "lm_head.weight")]
    if wrong:
        return failed("tensor_shapes", f"{len(wrong)} tensors have the wrong shape: {wrong[:3]}",
                      "the weights do not fit the model group's architecture; export the right checkpoint")
    return passed("tensor_shapes", f"every layer tensor has its architecture's shape (hidden {arch.hidden_size}, "
                  f"ffn {arch.ffn_hidden_size}, {arch.num_attention_heads} heads / {arch.num_query_groups} groups)")


def check_vocab_rows(d: ExportDir) -> Item:
    vocab = _arch_of(d).vocab_size
    rows = {n: d.tensors.tensors[n].shape[0] for n in ("model.embed_tokens.weight", "lm_head.weight")
            if n in d.tensors.tensors}
    cfg_vocab = d.config.get("vocab_size")
    problems = []
    for name, r in rows.items():
        if r > vocab:
            extra = d.tensors.read(name)[vocab - 1:]
            replicated = bool((extra == extra[:1]).all())
            problems.append(f"{name} has {r} rows, {r - vocab} more than the vocabulary ({vocab})"
                            + (": Megatron's vocab padding (copies of the last row) was left in" if replicated else ""))
        elif r < vocab:
            problems.append(f"{name} has {r} rows, fewer than the vocabulary ({vocab})")
    if cfg_vocab != vocab:
        problems.append(f"config.json vocab_size is {cfg_vocab}, the model has {vocab}")
    if problems:
        return failed("vocab_rows", "; ".join(problems), f"trim embed_tokens and lm_head to the first {vocab} rows "
                      "(megatron_to_hf does; MindSpeed's mg->hf needs the HF config's vocab_size)")
    return passed("vocab_rows", f"embed_tokens and lm_head have exactly {vocab} rows (no padding rows)")


def check_dtype(d: ExportDir) -> Item:
    dtypes: dict[str, int] = {}
    for info in d.tensors.tensors.values():
        dtypes[info.dtype] = dtypes.get(info.dtype, 0) + 1
    cfg_dtype = d.config.get("torch_dtype")
    want = TORCH_DTYPES[d.dtype] if d.dtype else cfg_dtype
    if set(dtypes) != {want}:
        return failed("dtype", f"tensor dtypes {dtypes}; expected all {want}" + (" (model.params_dtype)" if d.dtype
                      else " (config.json torch_dtype)"), "export with --params-dtype / model.params_dtype set to the "
                      "training dtype, so weights and config agree", dtypes=dtypes)
    count = sum(_numel(i.shape) for i in d.tensors.tensors.values())
    size = f"{count / 1e9:.3g}B" if count >= 1e9 else f"{count / 1e6:.3g}M"
    return passed("dtype", f"all {sum(dtypes.values())} tensors are {want} ({size} parameters)", parameters=count)


def check_finite_and_untied(d: ExportDir) -> list[Item]:
    """One pass over every tensor: NaN/Inf, and whether lm_head equals embed_tokens."""
    import torch

    bad = []
    embed = head = None
    for name in d.tensors.tensors:
        t = d.tensors.read(name)
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad.append(f"{name} ({int(torch.isnan(t).sum())} NaN, {int(torch.isinf(t).sum())} Inf)")
        if name == "model.embed_tokens.weight":
            embed = t
        elif name == "lm_head.weight":
            head = t
    finite = (failed("finite", f"non-finite values in {bad[:4]}", "the checkpoint diverged or was corrupted; export "
                     "an earlier iteration") if bad else passed("finite", "no NaN or Inf in any tensor"))
    tied_cfg = d.config.get("tie_word_embeddings", False)
    if head is None:
        why = "no lm_head.weight" + (" and tie_word_embeddings is true" if tied_cfg else "")
        untied = failed("untied_lm_head", why,
                        "export the output layer as lm_head.weight (--untie-embeddings-and-output-weights)")
    elif embed is not None and head.shape == embed.shape and torch.equal(head, embed):
        untied = failed("untied_lm_head", "lm_head.weight is identical to model.embed_tokens.weight (a tied head); "
                        "Llama-3-8B's output layer is its own weight", "export the trained output_layer, not a copy "
                        "of the embedding (--untie-embeddings-and-output-weights)")
    else:
        untied = passed("untied_lm_head", "lm_head.weight is its own tensor, different from embed_tokens")
    return [finite, untied]


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


# (item name, check), in report order.
FILE_CHECKS: tuple[tuple[str, Check], ...] = (
    ("directory_name", check_directory_name), ("config", check_config), ("generation_config", check_generation_config),
    ("tokenizer_files", check_tokenizer_files), ("tokenizer", check_tokenizer), ("pad_unk", check_pad_unk))
TENSOR_CHECKS: tuple[tuple[str, Check], ...] = (
    ("safetensors_index", check_index), ("tensor_names", check_tensor_names), ("tensor_shapes", check_tensor_shapes),
    ("vocab_rows", check_vocab_rows), ("dtype", check_dtype))
