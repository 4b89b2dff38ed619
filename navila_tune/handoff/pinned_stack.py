"""Load an exported LLM the way NaVILA does, in NaVILA's pinned stack (transformers 4.37.2, tokenizers 0.15).

Two halves:
- ``main`` runs INSIDE the pinned environment (``scripts/make_navila_env.sh``) as
  ``python -m navila_tune.handoff.pinned_stack DIR``: NaVILA's exact AutoConfig / AutoTokenizer /
  AutoModelForCausalLM calls, one forward pass and a short greedy generation through the ``llama_3``
  conversation, printed as one JSON line. It imports only the standard library, transformers and torch
  (and ``navila_tune.handoff.facts``), so that environment needs nothing of navila_tune's dependencies.
- ``pinned_stack_item`` runs here: it starts that process and turns its JSON into a report item.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from navila_tune.handoff import facts

PROMPT = "Go past the sofa and stop at the door. What is your next action?"
NEW_TOKENS = 8


def _navila_load(hf_dir: str) -> dict[str, Any]:
    import tokenizers
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    steps: list[dict[str, Any]] = []
    out: dict[str, Any] = {"versions": {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
                                        "torch": torch.__version__, "python": sys.version.split()[0]}, "steps": steps}

    def step(name: str, ok: bool, message: str) -> bool:
        steps.append({"name": name, "ok": ok, "message": message})
        return ok

    config = AutoConfig.from_pretrained(hf_dir)
    step("AutoConfig", True, f"{type(config).__name__}, rope_scaling {config.rope_scaling}")
    tokenizer = AutoTokenizer.from_pretrained(hf_dir, **facts.TOKENIZER_KWARGS)
    step("AutoTokenizer", True, f"{type(tokenizer).__name__}, {len(tokenizer)} tokens")
    ids = {}
    for token in facts.TEMPLATE_TOKENS:
        enc = tokenizer.encode(token, add_special_tokens=False)
        if step(f"token {token}", len(enc) == 1, f"encodes to {enc}"):
            ids[token] = enc[0]
    model = AutoModelForCausalLM.from_pretrained(hf_dir, config=config, torch_dtype=torch.bfloat16)
    model.eval()
    step("AutoModelForCausalLM", True, f"{type(model).__name__}, {sum(p.numel() for p in model.parameters())} "
         f"parameters, {next(model.parameters()).dtype}")
    prompt = facts.llama_3_prompt([(0, PROMPT), (1, None)])
    input_ids = tokenizer(prompt, return_tensors="pt").input_ids
    bos = ids.get(facts.BEGIN_OF_TEXT)
    step("double BOS", input_ids[0, :2].tolist() == [bos, bos],
         f"the llama_3 prompt starts with {input_ids[0, :2].tolist()} (NaVILA: literal + post-processor BOS)")
    with torch.no_grad():
        logits = model(input_ids).logits
    step("forward", bool(torch.isfinite(logits).all()), f"logits {list(logits.shape)}, finite "
         f"{bool(torch.isfinite(logits).all())}")
    eos = model.generation_config.eos_token_id
    eos_list = eos if isinstance(eos, list) else [eos]
    step("generation eos", ids.get(facts.END_OF_TEXT) in eos_list,
         f"generation_config eos_token_id {eos} (must include <|end_of_text|> {ids.get(facts.END_OF_TEXT)})")
    with torch.no_grad():
        generated = model.generate(input_ids, max_new_tokens=NEW_TOKENS, do_sample=False,
                                   pad_token_id=tokenizer.eos_token_id)
    new = generated[0, input_ids.shape[1]:].tolist()
    text = tokenizer.decode(new, skip_special_tokens=True)
    step("generate", 0 < len(new) <= NEW_TOKENS, f"{len(new)} new tokens: {text!r}")
    out["generation"] = text
    out["ok"] = all(s["ok"] for s in steps)
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m navila_tune.handoff.pinned_stack HF_DIR", file=sys.stderr)
        return 2
    try:
        result = _navila_load(args[0])
    except Exception as e:  # noqa: BLE001 - the failure is the result
        result = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    print(json.dumps(result, default=str))
    return 0 if result.get("ok") else 1


# --------------------------------------------------------------------------- the side that starts it
def pinned_stack_item(python: str, hf_dir: str, timeout: float = 1800.0):
    """Run ``main`` under ``python`` (a NaVILA-pinned environment) and report what it found."""
    from navila_tune.handoff.report import failed, passed

    fix_env = "create the environment with scripts/make_navila_env.sh and pass its bin/python"
    if not Path(python).is_file():
        return failed("pinned_stack", f"{python} does not exist", fix_env)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    started = time.time()
    with tempfile.TemporaryDirectory() as cwd:
        env["PYTHONPATH"] = _standalone_copy(Path(cwd))
        try:
            proc = subprocess.run([python, "-m", "navila_tune.handoff.pinned_stack", str(Path(hf_dir).resolve())],
                                  cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return failed("pinned_stack", f"did not finish within {timeout:.0f} s",
                          "run it by hand to see where it hangs")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        return failed("pinned_stack", f"{python} printed no result (exit {proc.returncode}): {' | '.join(tail)}",
                      fix_env)
    result = json.loads(lines[-1])
    seconds = round(time.time() - started, 2)
    versions = result.get("versions", {})
    where = (f"transformers {versions.get('transformers')}, tokenizers {versions.get('tokenizers')}"
             if versions else python)
    if not result.get("ok"):
        bad = [f"{s['name']}: {s['message']}" for s in result.get("steps", []) if not s["ok"]]
        why = result.get("error") or "; ".join(bad)
        return failed("pinned_stack", f"NaVILA's loading calls under {where} fail: {why}",
                      "fix the items above; this is what NaVILA's build_llm_and_tokenizer would hit",
                      result=result, wall_s=seconds)
    return passed("pinned_stack", f"{where}: AutoConfig, AutoTokenizer(use_fast=False, legacy=False, "
                  f"padding_side='right', model_max_length=4096), AutoModelForCausalLM(bf16), forward and "
                  f"{NEW_TOKENS}-token generation through the llama_3 template work", result=result, wall_s=seconds)


def _standalone_copy(where: Path) -> str:
    """This module and ``facts`` as a bare ``navila_tune.handoff`` package under ``where``.

    The pinned environment must not see this environment's site-packages (an installed navila_tune sits
    next to transformers 4.57), so it gets copies of the two standard-library modules it imports.
    """
    here = Path(__file__).resolve().parent
    pkg = where / "pkg" / "navila_tune" / "handoff"
    pkg.mkdir(parents=True)
    for init in (pkg.parent / "__init__.py", pkg / "__init__.py"):
        init.write_text("")
    for name in ("facts.py", "pinned_stack.py"):
        (pkg / name).write_bytes((here / name).read_bytes())
    return str(where / "pkg")


if __name__ == "__main__":
    sys.exit(main())
