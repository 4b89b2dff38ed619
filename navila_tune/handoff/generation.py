"""generation_config.json of an exported LLM: eos must include <|end_of_text|> and <|eot_id|>.

NaVILA stops generating on the eos ids of ``llm/generation_config.json`` and trains answers that end with
``<|end_of_text|>``; Meta's original Instruct file has only one of the two ids (reference §4.4). The export
keeps the source's file byte for byte when it already lists both, and otherwise writes the source's
values with the missing ids appended (or a minimal file when the source had none).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from navila_tune.handoff import facts

GENERATION_CONFIG = "generation_config.json"


def template_token_ids(hf_dir: Path) -> dict[str, int]:
    """Ids of the llama_3 template tokens in ``tokenizer.json`` (added tokens first, then the BPE vocab)."""
    tok = json.loads((hf_dir / "tokenizer.json").read_text(encoding="utf-8"))
    ids = {t["content"]: int(t["id"]) for t in tok.get("added_tokens", [])}
    vocab = (tok.get("model") or {}).get("vocab") or {}
    return {t: ids[t] if t in ids else vocab[t] for t in facts.TEMPLATE_TOKENS if t in ids or t in vocab}


def ensure_generation_config(hf_dir: str | os.PathLike) -> dict[str, Any]:
    """Make ``hf_dir/generation_config.json`` list both stop ids; returns what was done."""
    root = Path(hf_dir)
    ids = template_token_ids(root)
    stops = [ids[t] for t in (facts.END_OF_TEXT, facts.EOT) if t in ids]
    path = root / GENERATION_CONFIG
    if path.is_file():
        gen = json.loads(path.read_text(encoding="utf-8"))
        action = "kept"
    else:
        gen = {"_from_model_config": False, "do_sample": False}
        action = "written"
    if facts.BEGIN_OF_TEXT in ids:
        gen.setdefault("bos_token_id", ids[facts.BEGIN_OF_TEXT])
    eos = gen.get("eos_token_id")
    eos_list = list(eos) if isinstance(eos, list) else [] if eos is None else [eos]
    added = [i for i in stops if i not in eos_list]
    if added or action == "written":
        gen["eos_token_id"] = eos_list + added
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(gen, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        action = action if action == "written" else "eos extended"
    return {"generation_config": action, "eos_token_id": gen.get("eos_token_id"), "added_eos": added}
