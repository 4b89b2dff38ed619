#!/usr/bin/env python3
"""Copy the flag facts navila_tune needs from a MindSpeed-LLM flag reference into the package.

Input: the machine-readable reference of every flag MindSpeed-LLM 2.3.0's entry scripts accept
(AST-extracted from its sources; see docs). Output: navila_tune/backends/mindspeed/flags_2.3.0.json,
one flag list per entry script, with only the fields an argparse parser needs.

    python scripts/extract_mindspeed_flags.py path/to/mindspeed_flags.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

KEEP = ("flags", "dest", "type", "action", "nargs", "choices", "required")
OUT = Path(__file__).resolve().parent.parent / "navila_tune" / "backends" / "mindspeed" / "flags_2.3.0.json"


def slim(flag: dict) -> dict:
    out = {k: flag[k] for k in KEEP if k in flag and flag[k] is not None}
    if isinstance(out.get("choices"), dict):  # computed at import time: {"value": [...], "source_expr": ...}
        out["choices"] = out["choices"]["value"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("reference", type=Path)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    ref = json.loads(args.reference.read_text())
    training = [slim(f) for f in ref["parsers"]["megatron_training@2.3.0"]["flags"]]
    scripts = ref["scripts"]
    variants = scripts["convert_ckpt.py"]["variants"]
    data = {
        "source": {"revisions": ref["revisions"], "generated_utc": ref.get("generated_utc")},
        "parsers": {
            "training": {"allow_abbrev": False, "flags": training},
            "preprocess_data.py": {"allow_abbrev": True, "flags": [slim(f) for f in scripts["preprocess_data.py"]["flags"]]},
            "convert_ckpt.py:hf": {"allow_abbrev": False, "flags": [slim(f) for f in variants["--load-model-type hf"]]},
            "convert_ckpt.py:mg": {"allow_abbrev": False, "flags": [slim(f) for f in variants["--load-model-type mg"]]},
        },
        "scripts": {
            "posttrain_gpt.py": "training",
            "inference.py": "training",
            "evaluation.py": "training",
            "preprocess_data.py": "preprocess_data.py",
        },
        "runtime_choices": {
            "inference.py": {"--task": scripts["inference.py"]["task_choices_validated_at_runtime"]},
        },
    }
    args.out.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
