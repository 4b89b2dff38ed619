"""Tiny exports, trained checkpoints, training samples and VILA checkpoints for the hand-off tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from navila_tune.arch import LlamaArch

REPO = Path(__file__).resolve().parents[2]
ASSET = REPO / "navila_tune" / "assets" / "llama3_tiny"
NAV_DATA = REPO / "navila_tune" / "assets" / "nav_cot_tiny"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
PAD = "[PAD]"


def source_llm(out: Path, *, max_positions: int = 8192) -> Path:
    """An HF source directory: the tiny tokenizer (byte copies), its generation config, a config.json."""
    out.mkdir(parents=True)
    for name in (*TOKENIZER_FILES, "generation_config.json"):
        shutil.copyfile(ASSET / name, out / name)
    config = json.loads((ASSET / "config.json").read_text())
    config["max_position_embeddings"] = max_positions
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out


def arch_of(hf_dir: Path) -> LlamaArch:
    return LlamaArch.from_hf_config(json.loads((hf_dir / "config.json").read_text()))


def fitted_state(arch: LlamaArch, padded_vocab: int, prefix: Path, *, seed: int = 0,
                 steps: int = 40) -> dict[str, torch.Tensor]:
    """Weights fitted for a few steps to the training samples (under a second): a model that is good on them,
    so a conversion bug (swapped gate/up halves) raises their loss many times the check's tolerance."""
    from navila_tune.handoff.numerics import training_samples
    from navila_tune.native.batching import collate
    from navila_tune.native.modeling import build_model, masked_ce_sum

    torch.manual_seed(seed)
    model = build_model(arch, padded_vocab).train()
    rows = [{"input_ids": i, "labels": lab, "attention_mask": np.ones(len(i), dtype=np.int64)}
            for i, lab in training_samples(str(prefix), 8, 512)]
    batch = collate(rows, pad_to_multiple_of=1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    for _ in range(steps):
        total, count = masked_ce_sum(model(input_ids=batch.input_ids).logits, batch.labels)
        opt.zero_grad()
        (total / count).backward()
        opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def trained_checkpoint(out: Path, arch: LlamaArch, prefix: Path, *, tp: int = 2, pp: int = 2,
                       iteration: int = 5) -> Path:
    """A Megatron checkpoint at TP/PP with a padded vocab, as training leaves it."""
    from navila_tune.arch import padded_vocab_size
    from navila_tune.convert import save_megatron_state

    padded = padded_vocab_size(arch.vocab_size, 4, tp)
    state = fitted_state(arch, padded, prefix)
    save_megatron_state(state, str(out), arch=arch, tp=tp, pp=pp, num_layer_list=None, iteration=iteration,
                        padded_vocab_size=padded)
    return out


def training_data(prefix: Path, tokenizer_dir: Path, rows: int = 8) -> Path:
    """PREFIX_packed_*_document of the first nav_cot_tiny rows, encoded as preprocessing encodes them."""
    import pyarrow.parquet as pq
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder
    from transformers import AutoTokenizer

    from navila_tune.data import encode_sample, user_content

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    samples = [encode_sample(tok, user_content(r["instruction"], r["input"]), r["output"])
               for r in pq.read_table(NAV_DATA / "train.parquet").to_pylist()[:rows]]
    prefix.parent.mkdir(parents=True, exist_ok=True)
    columns = {"input_ids": [s[0] for s in samples], "attention_mask": [[1] * len(s[0]) for s in samples],
               "labels": [s[1] for s in samples]}
    for key, seqs in columns.items():
        p = f"{prefix}_packed_{key}_document"
        builder = IndexedDatasetBuilder(p + ".bin", dtype=np.int32)
        for seq in seqs:
            builder.add_item(torch.tensor(list(seq), dtype=torch.int32))
            builder.end_document()
        builder.finalize(p + ".idx")
    return prefix


def export(megatron: Path, source: Path, out: Path, *, max_shard_bytes: int = 1_000_000) -> Path:
    """What the export stage writes before its check: megatron_to_hf (several shards + index), stop ids."""
    from navila_tune.convert import megatron_to_hf
    from navila_tune.handoff import ensure_generation_config

    megatron_to_hf(megatron, out, source_hf_dir=source, dtype="fp32", expected_arch=arch_of(source),
                   progress=False, max_shard_bytes=max_shard_bytes)
    ensure_generation_config(out)
    return out


# ------------------------------------------------------------------------------------- editing exports
def edit_json(path: Path, **changes: Any) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data, indent=2))


def shard_of(hf: Path, name: str) -> Path:
    index = json.loads((hf / "model.safetensors.index.json").read_text())
    return hf / index["weight_map"][name]


def edit_tensors(hf: Path, edit) -> None:
    """Rewrite every shard with ``edit(name, tensor) -> tensor`` applied (the index keeps its mapping)."""
    from safetensors.torch import load_file, save_file

    for shard in sorted(hf.glob("*.safetensors")):
        tensors = load_file(shard)
        save_file({k: edit(k, v, tensors) for k, v in tensors.items()}, shard, metadata={"format": "pt"})


def read_tensor(hf: Path, name: str) -> torch.Tensor:
    from safetensors import safe_open

    shard = shard_of(hf, name) if (hf / "model.safetensors.index.json").is_file() else hf / "model.safetensors"
    with safe_open(str(shard), framework="pt") as f:
        return f.get_tensor(name)


# ------------------------------------------------------------------------------------- VILA checkpoints
def pad_tokenizer(src: Path, out: Path) -> int:
    """The tiny tokenizer with NaVILA's [PAD] appended as a special token (JSON edits, never re-saved)."""
    tok = json.loads((src / "tokenizer.json").read_text())
    pad_id = max(t["id"] for t in tok["added_tokens"]) + 1
    tok["added_tokens"].append({"id": pad_id, "content": PAD, "single_word": False, "lstrip": False, "rstrip": False,
                                "normalized": False, "special": True})
    (out / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False, indent=2))
    cfg = json.loads((src / "tokenizer_config.json").read_text())
    cfg["added_tokens_decoder"][str(pad_id)] = {"content": PAD, "lstrip": False, "normalized": False,
                                                "rstrip": False, "single_word": False, "special": True}
    cfg["pad_token"] = PAD
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))
    special = json.loads((src / "special_tokens_map.json").read_text())
    special["pad_token"] = {"content": PAD, "lstrip": False, "normalized": False, "rstrip": False,
                            "single_word": False}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    return pad_id


def _random_safetensors(path: Path, shapes: dict[str, tuple[int, ...]], seed: int) -> None:
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    save_file({k: torch.randn(s, generator=gen) for k, s in shapes.items()}, path, metadata={"format": "pt"})


def vila_checkpoint(root: Path, seed: int = 0) -> dict[str, Any]:
    """A tiny NaVILA/VILA checkpoint: top-level config, llm/ with a [PAD] row, random vision tower and projector."""
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    llm = root / "llm"
    llm.mkdir(parents=True)
    pad_id = pad_tokenizer(ASSET, llm)
    shutil.copyfile(ASSET / "generation_config.json", llm / "generation_config.json")
    config = json.loads((ASSET / "config.json").read_text())
    config["vocab_size"] = pad_id + 1
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**config))
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for name in ("model.embed_tokens.weight", "lm_head.weight"):  # NaVILA initialises [PAD] to the mean row
        state[name][pad_id] = state[name][:pad_id].mean(0)
    save_file(state, llm / "model.safetensors", metadata={"format": "pt"})
    (llm / "config.json").write_text(json.dumps(config, indent=2))
    tower = root / "vision_tower"
    tower.mkdir()
    (tower / "config.json").write_text(json.dumps({"model_type": "siglip_vision_model", "hidden_size": 16,
                                                   "image_size": 28, "patch_size": 14}))
    (tower / "preprocessor_config.json").write_text(json.dumps({"image_processor_type": "SiglipImageProcessor",
                                                                "size": {"height": 28, "width": 28}}))
    _random_safetensors(tower / "model.safetensors", {"vision_model.embeddings.patch_embedding.weight": (16, 3, 14, 14),
                                                      "vision_model.post_layernorm.weight": (16,)}, seed + 1)
    proj = root / "mm_projector"
    proj.mkdir()
    (proj / "config.json").write_text(json.dumps({"model_type": "v2l_projector",
                                                  "mm_projector_type": "mlp_downsample"}))
    _random_safetensors(proj / "model.safetensors", {"layers.1.weight": (64,), "layers.2.weight": (128, 64),
                                                     "layers.4.weight": (128, 128)}, seed + 2)
    origin = "./checkpoints/navila-tiny-pretrain"
    top = {
        "architectures": ["LlavaLlamaModel"], "model_type": "llava_llama", "_name_or_path": origin,
        "resume_path": origin, "model_dtype": "torch.bfloat16", "num_video_frames": 8, "fps": 0.0,
        "image_aspect_ratio": "resize", "mm_vision_select_layer": -2, "mm_vision_select_feature": "cls_patch",
        "llm_cfg": {**config, "_name_or_path": f"{origin}/llm", "model_max_length": 4096,
                    "tokenizer_padding_side": "right"},
        "vision_tower_cfg": {"_name_or_path": f"{origin}/vision_tower", "model_type": "siglip_vision_model"},
        "mm_projector_cfg": {"_name_or_path": f"{origin}/mm_projector", "mm_projector_type": "mlp_downsample"},
    }
    (root / "config.json").write_text(json.dumps(top, indent=2))
    (root / "trainer_state.json").write_text(json.dumps({"global_step": 1}))
    return {"root": root, "pad_id": pad_id, "vocab": pad_id + 1}


def tree_digest(root: Path) -> dict[str, tuple[int, str]]:
    """(size, sha256) of every file under ``root``, for "left untouched" assertions."""
    from navila_tune.handoff.files import sha256

    return {p.relative_to(root).as_posix(): (p.stat().st_size, sha256(p)) for p in sorted(root.rglob("*"))
            if p.is_file()}
