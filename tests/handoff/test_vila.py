"""A NaVILA/VILA checkpoint as the model source: convert -> train -> export -> splice, and the splice itself."""

from __future__ import annotations

import json
import os

import pytest
import torch

import handoff_kit as kit
from navila_testing import compose
from navila_tune.handoff.report import PASS


@pytest.fixture(scope="module")
def vila_run(tmp_path_factory):
    """The launcher on a tiny VILA checkpoint whose llm/ carries a [PAD] row (vocab 1024, padded to 1030)."""
    from navila_tune.app import launch

    tmp = tmp_path_factory.mktemp("vila_run")
    src = kit.vila_checkpoint(tmp / "navila-tiny-pretrain")
    before = kit.tree_digest(src["root"])
    rows = tmp / "train.parquet"
    import pyarrow.parquet as pq

    pq.write_table(pq.read_table(kit.NAV_DATA / "train.parquet").slice(0, 32), rows)
    cfg = compose(
        "stages=[convert,preprocess,train,export]",
        "model.source_format=vila", f"model.vila_dir={src['root']}", "model.hf_dir=${model.vila_dir}/llm",
        "model.init_seed=null", f"model.arch.vocab_size={src['vocab']}", "model.make_vocab_size_divisible_by=5",
        f"data.input={rows}", "data.eval_input=null", "optim.train_iters=3", "optim.global_batch_size=8",
        "optim.micro_batch_size=8", "optim.save_interval=3", "export.vila=true", "export.check_samples=2",
        f"paths.work_dir={tmp / 'work'}")
    launch(cfg, run_dir=str(tmp / "run"))
    export = next((tmp / "work" / "export").glob("*[0-9a-f]"))
    train = next((tmp / "work" / "train").glob("*[0-9a-f]"))
    return {**src, "before": before, "export": export, "train": train}


def test_the_spliced_checkpoint_keeps_vision_tower_projector_bytes_and_the_llm_vocab(vila_run):
    src, out = vila_run["root"], vila_run["export"] / "vila"
    assert {p.name for p in out.iterdir()} == {"config.json", "llm", "vision_tower", "mm_projector"}
    for sub in ("vision_tower", "mm_projector"):
        assert kit.tree_digest(out / sub) == kit.tree_digest(src / sub)
    assert json.loads((out / "llm" / "config.json").read_text())["vocab_size"] == vila_run["vocab"] == 1024
    assert kit.read_tensor(out / "llm", "model.embed_tokens.weight").shape[0] == 1024
    assert kit.read_tensor(out / "llm", "lm_head.weight").shape[0] == 1024
    assert kit.tree_digest(out / "llm") == kit.tree_digest(vila_run["export"] / "hf")  # the checked export
    assert kit.tree_digest(src) == vila_run["before"]  # the source checkpoint is never modified
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # as any new folder (not mkdtemp's 0700)


def test_the_pad_row_survives_conversion_training_and_export_exactly(vila_run):
    from transformers import AutoTokenizer

    from navila_tune.native.checkpointing import load_state

    hf = vila_run["export"] / "vila" / "llm"
    tok = AutoTokenizer.from_pretrained(str(hf))
    assert tok.pad_token == kit.PAD and tok.pad_token_id == vila_run["pad_id"] == 1023
    meta, trained = load_state(str(vila_run["train"] / "ckpt"))
    assert meta.padded_vocab_size == 1030  # ceil(1024 / (5 x TP2)) x 10: six padding rows during training
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        exported = kit.read_tensor(hf, name)
        assert torch.equal(exported, trained[name][:1024])  # the [PAD] row (1023) included, padding trimmed


def test_the_top_level_config_is_the_sources_with_references_pointing_at_the_new_checkpoint(vila_run):
    src = json.loads((vila_run["root"] / "config.json").read_text())
    out = json.loads((vila_run["export"] / "vila" / "config.json").read_text())
    final = str(vila_run["export"] / "vila")
    assert out["_name_or_path"] == out["resume_path"] == final
    assert out["llm_cfg"]["_name_or_path"] == f"{final}/llm"
    assert out["vision_tower_cfg"]["_name_or_path"] == f"{final}/vision_tower"
    assert out["mm_projector_cfg"]["_name_or_path"] == f"{final}/mm_projector"
    assert out["llm_cfg"]["vocab_size"] == 1024 and out["llm_cfg"]["model_max_length"] == 4096  # VILA's keys kept
    keep = {k: v for k, v in src.items() if k not in ("_name_or_path", "resume_path", "llm_cfg", "vision_tower_cfg",
                                                      "mm_projector_cfg")}
    assert {k: out[k] for k in keep} == keep


def test_the_export_stage_ran_the_hand_off_check_on_the_llm_and_the_splice(vila_run):
    report = json.loads((vila_run["export"] / "handoff_report.json").read_text())
    status = {i["name"]: i["status"] for i in report["items"]}
    assert report["status"] == PASS, status
    for name in ("vila_layout", "vila_components_unchanged", "vila_llm", "vila_config", "loss_fp32", "loss_bf16",
                 "loss_fp16", "pad_unk"):
        assert status[name] == PASS, name
    pad = next(i for i in report["items"] if i["name"] == "pad_unk")
    assert "[PAD]" in pad["message"]
    result = json.loads((vila_run["export"] / "result.json").read_text())
    assert result["vila"] == str(vila_run["export"] / "vila") and result["handoff"]["status"] == PASS


def test_splice_refuses_a_folder_that_is_not_a_vila_checkpoint(tmp_path, clean):
    from navila_tune.handoff.vila import VilaError, splice

    (tmp_path / "src").mkdir()
    with pytest.raises(VilaError, match=r"no top-level config.json.*no llm/ folder.*model.vila_dir \(splice"):
        splice(tmp_path / "src", clean.hf, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_string_typed_llm_reference_is_repointed_and_a_changed_component_is_caught(tmp_path, clean):
    from navila_tune.handoff.vila import splice, vila_items

    src = kit.vila_checkpoint(tmp_path / "src")["root"]
    cfg = json.loads((src / "config.json").read_text())
    cfg["llm_cfg"] = "/somewhere/else/llm"
    (src / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "spliced"
    splice(src, clean.hf, out)
    assert json.loads((out / "config.json").read_text())["llm_cfg"] == str(out.resolve() / "llm")
    items = {i.name: i for i in vila_items(out, src, clean.hf)}
    assert items["vila_config"].status == PASS and items["vila_components_unchanged"].status == PASS
    assert items["vila_llm"].status == "fail" and "vocab_size 1023 != the source llm/ vocab_size 1024" \
        in items["vila_llm"].message  # a plain tiny export is not the source's llm/ with its [PAD] row
    (out / "mm_projector" / "model.safetensors").write_bytes(b"changed")
    items = {i.name: i for i in vila_items(out, src, clean.hf)}
    assert items["vila_components_unchanged"].status == "fail"
    assert "mm_projector/model.safetensors" in items["vila_components_unchanged"].message
