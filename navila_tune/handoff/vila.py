"""NaVILA/VILA checkpoints: the layout, splicing a fine-tuned ``llm/`` in, and checking the result.

A VILA-1.5 checkpoint (what ``LlavaMetaModel.save_pretrained`` writes, reference §1.2)::

    <ckpt>/config.json       model_type llava_llama; llm_cfg / vision_tower_cfg / mm_projector_cfg
    <ckpt>/llm/              plain HF Llama with its tokenizer (NaVILA's vocabulary carries a [PAD] row)
    <ckpt>/vision_tower/     SigLIP weights + preprocessor_config.json
    <ckpt>/mm_projector/     config.json + model.safetensors

NaVILA's loader (``llava/model/utils.py::get_model_config``) resolves a dict-typed ``*_cfg`` to
``<root>/llm``, ``<root>/vision_tower``, ``<root>/mm_projector`` (root = where the checkpoint is loaded
from, else ``resume_path``), and a string-typed one to that path. A spliced checkpoint reuses the source's
vision tower, projector and top-level config byte for byte, holds the fine-tuned ``llm/``, and has every
such reference pointed at itself.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from navila_tune.handoff import facts
from navila_tune.handoff.files import differing_files
from navila_tune.handoff.report import Item, failed, passed

LLM, VISION_TOWER, MM_PROJECTOR = "llm", "vision_tower", "mm_projector"
COMPONENTS = {"llm_cfg": LLM, "vision_tower_cfg": VISION_TOWER, "mm_projector_cfg": MM_PROJECTOR}
COPIED = (VISION_TOWER, MM_PROJECTOR)  # reused from the source byte for byte
CONFIG = "config.json"


class VilaError(ValueError):
    """A directory is not a usable VILA checkpoint; the message names it and the fix."""


def layout_problems(vila_dir: str | os.PathLike) -> list[str]:
    """What keeps ``vila_dir`` from being a VILA checkpoint (empty: it is one)."""
    root = Path(vila_dir)
    if not root.is_dir():
        return [f"{root} does not exist"]
    problems = []
    if not (root / CONFIG).is_file():
        problems.append(f"{root} has no top-level {CONFIG}")
    else:
        try:
            cfg = json.loads((root / CONFIG).read_text())
        except json.JSONDecodeError as e:
            return [f"{root / CONFIG} is not valid JSON ({e})"]
        missing_keys = [k for k in COMPONENTS if k not in cfg]
        if missing_keys:
            problems.append(f"{root / CONFIG} lacks {missing_keys} (model_type {cfg.get('model_type')!r}): not a "
                            f"VILA config")
    for sub in (LLM, VISION_TOWER, MM_PROJECTOR):
        if not (root / sub).is_dir():
            problems.append(f"{root} has no {sub}/ folder")
    if (root / LLM).is_dir() and not (root / LLM / CONFIG).is_file():
        problems.append(f"{root / LLM} has no {CONFIG}")
    return problems


def spliced_config(source_cfg: dict[str, Any], llm_config: dict[str, Any], final_dir: str) -> dict[str, Any]:
    """The source's top-level config with ``llm_cfg`` from the new ``llm/`` and every path pointing at ``final_dir``."""
    cfg = json.loads(json.dumps(source_cfg))
    for key in ("_name_or_path", "resume_path"):
        if key in cfg:
            cfg[key] = final_dir
    for key, sub in COMPONENTS.items():
        path = str(Path(final_dir) / sub)
        value = cfg.get(key)
        if key == "llm_cfg" and isinstance(value, dict):
            cfg[key] = {**value, **llm_config, "_name_or_path": path}
        elif isinstance(value, dict):
            value["_name_or_path"] = path
        elif isinstance(value, str):
            cfg[key] = path
    return cfg


def splice(source_vila: str | os.PathLike, llm_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
           final_dir: str | None = None) -> dict[str, Any]:
    """Write a VILA checkpoint at ``out_dir``: ``llm/`` from ``llm_dir``, the rest from ``source_vila``.

    ``llm/`` files are hard links to ``llm_dir``'s (copies across file systems); ``vision_tower/`` and
    ``mm_projector/`` are copied. ``final_dir`` is where the checkpoint will live (written into its
    config; default ``out_dir``). The directory appears only when complete.
    """
    source, llm, out = Path(source_vila), Path(llm_dir), Path(out_dir)
    problems = layout_problems(source)
    if problems:
        raise VilaError(f"{source} is not a VILA checkpoint: " + "; ".join(problems) + ". Fix: point "
                        "model.vila_dir (splice --source) at a NaVILA/VILA checkpoint (config.json, llm/, "
                        "vision_tower/, mm_projector/)")
    if out.exists():
        raise VilaError(f"{out} already exists; splice into a new directory")
    final = str(Path(final_dir or out).resolve())
    source_cfg = json.loads((source / CONFIG).read_text())
    llm_config = json.loads((llm / CONFIG).read_text())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.incomplete-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would hide the checkpoint from the NaVILA team
    try:
        linked = _link_tree(llm, tmp / LLM)
        for sub in COPIED:
            shutil.copytree(source / sub, tmp / sub, copy_function=shutil.copyfile)
        (tmp / CONFIG).write_text(json.dumps(spliced_config(source_cfg, llm_config, final), indent=2) + "\n")
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    skipped = sorted(p.name for p in source.iterdir() if p.is_file() and p.name != CONFIG)
    return {"vila": str(out), "llm_files": linked, "copied": list(COPIED), "not_copied": skipped}


def _link_tree(src: Path, dst: Path) -> int:
    dst.mkdir(parents=True)
    n = 0
    for f in sorted(src.iterdir()):
        if f.is_file():
            try:
                os.link(f, dst / f.name)
            except OSError:
                shutil.copyfile(f, dst / f.name)
            n += 1
    return n


# ------------------------------------------------------------------------------------------ checks
def vila_items(spliced: str | os.PathLike, source: str | os.PathLike, llm_export: str | os.PathLike,
               final_dir: str | None = None) -> list[Item]:
    """The spliced checkpoint keeps the source's vision tower, projector and llm/ vocabulary, holds the export.

    ``final_dir``: where it will live (the path its config names); default ``spliced``.
    """
    out, src, llm = Path(spliced), Path(source), Path(llm_export)
    final = Path(final_dir or out).resolve()
    problems = layout_problems(out)
    if problems:
        return [failed("vila_layout", "; ".join(problems), "re-run the export with export.vila=true")]
    items = [passed("vila_layout", f"{out} has config.json, llm/, vision_tower/, mm_projector/")]
    bad = facts.forbidden_substrings(str(final))
    if bad:
        items.append(failed("vila_directory_name", f"{final} contains {bad}: NaVILA would pick another model "
                            f"class for it", f"rename so no path component contains {bad}"))
    changed = [f"{sub}/{name}" for sub in COPIED for name in differing_files(src / sub, out / sub)]
    items.append(failed("vila_components_unchanged", f"{changed[:4]} differ from {src}",
                        "re-run the splice; vision_tower/ and mm_projector/ must be the source's bytes")
                 if changed else passed("vila_components_unchanged", f"vision_tower/ and mm_projector/ are "
                                        f"byte-identical to {src}"))
    differing = differing_files(llm, out / LLM)
    src_vocab = json.loads((src / LLM / CONFIG).read_text()).get("vocab_size")
    new_vocab = json.loads((out / LLM / CONFIG).read_text()).get("vocab_size")
    llm_problems = []
    if differing:
        llm_problems.append(f"llm/ differs from the checked export {llm} in {differing[:4]}")
    if src_vocab != new_vocab:
        llm_problems.append(f"llm/ vocab_size {new_vocab} != the source llm/ vocab_size {src_vocab}")
    items.append(failed("vila_llm", "; ".join(llm_problems), "export the model group that describes the source "
                        "llm/ (model.arch.vocab_size, including its [PAD] row)") if llm_problems
                 else passed("vila_llm", f"llm/ is the checked export; vocab_size {new_vocab} as in the source llm/"))
    items.append(_config_item(out, src, final))
    return items


def _config_item(out: Path, src: Path, final: Path) -> Item:
    cfg = json.loads((out / CONFIG).read_text())
    source_cfg = json.loads((src / CONFIG).read_text())
    wrong = []
    for key, sub in COMPONENTS.items():
        value = cfg.get(key)
        path = value.get("_name_or_path") if isinstance(value, dict) else value
        if isinstance(path, str) and Path(path) != final / sub:
            wrong.append(f"{key} -> {path}")
    wrong += [f"{key} -> {cfg[key]}" for key in ("_name_or_path", "resume_path") if key in cfg
              and Path(cfg[key]) != final]
    changed = sorted(k for k in source_cfg if k not in ("_name_or_path", "resume_path", *COMPONENTS)
                     and cfg.get(k) != source_cfg[k])
    if wrong or changed:
        return failed("vila_config", f"top-level config.json: references not pointing at {final}: {wrong}; changed "
                      f"keys {changed}", "re-run the splice (it rewrites only the references)")
    return passed("vila_config", f"top-level config.json is the source's, with its references pointing at {final}")
