"""The hand-off check: a clean export passes every item; each deliberately broken export fails its item."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import handoff_kit as kit
from navila_tune.handoff.facts import END_OF_TEXT, EOT
from navila_tune.handoff.generation import template_token_ids as ids
from navila_tune.handoff.report import FAIL, PASS

STATIC = ("directory_name", "config", "generation_config", "tokenizer_files", "tokenizer", "pad_unk",
          "safetensors_index", "tensor_names", "tensor_shapes", "vocab_rows", "dtype", "finite", "untied_lm_head")
LOSSES = ("loss_fp32", "loss_bf16", "loss_fp16")


def test_a_clean_export_passes_every_check(clean):
    report = clean.check(clean.hf)
    assert [i.name for i in report.items] == [*STATIC, *LOSSES]
    assert all(i.status == PASS for i in report.items), report.text()
    assert report.ok and "PASS (16 passed, 0 failed, 0 warnings, 0 skipped)" in report.text()
    assert len(list(clean.hf.glob("model-*.safetensors"))) > 1  # the index is really exercised
    for name in LOSSES:  # same weights, same code: the loss is reproduced exactly
        d = report.item(name).details
        assert d["delta"] == 0.0 and d["samples"] == 4 and d["tokens"] > 100


def _rope_scaling(hf):
    kit.edit_json(hf / "config.json", rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                    "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})


def _eos_without_end_of_text(hf):
    kit.edit_json(hf / "generation_config.json", eos_token_id=[ids(hf)[EOT]])  # <|eot_id|> only


def _resaved_tokenizer(hf):
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(str(hf)).save_pretrained(str(hf))


def _padded_vocab_rows(hf):
    def pad(name, t, _):
        if name in ("model.embed_tokens.weight", "lm_head.weight"):
            return torch.cat([t, t[-1:]])  # Megatron's padding: a copy of the last row
        return t

    kit.edit_tensors(hf, pad)


def _tied_head(hf):
    embed = kit.read_tensor(hf, "model.embed_tokens.weight")
    kit.edit_tensors(hf, lambda name, t, _: embed.clone() if name == "lm_head.weight" else t)


def _missing_shard(hf):
    kit.shard_of(hf, "model.layers.1.mlp.down_proj.weight").unlink()


def _swapped_gate_up(hf):
    gate_up = {}
    for i in range(2):
        g, u = f"model.layers.{i}.mlp.gate_proj.weight", f"model.layers.{i}.mlp.up_proj.weight"
        gate_up[g], gate_up[u] = kit.read_tensor(hf, u), kit.read_tensor(hf, g)
    kit.edit_tensors(hf, lambda name, t, _: gate_up.get(name, t))


def _pad_is_eot(hf):
    kit.edit_json(hf / "tokenizer_config.json", pad_token="<|eot_id|>")


def _llama_tokenizer_class(hf):
    kit.edit_json(hf / "tokenizer_config.json", tokenizer_class="LlamaTokenizerFast")


def _nan_weight(hf):
    kit.edit_tensors(hf, lambda name, t, _: torch.full_like(t, float("nan")) if name == "model.norm.weight" else t)


def _no_torch_dtype(hf):
    cfg = json.loads((hf / "config.json").read_text())
    cfg.pop("torch_dtype")
    (hf / "config.json").write_text(json.dumps(cfg))


BROKEN = {
    # name: (break it, the item that must fail, words its message must hold)
    "rope_scaling_set": (_rope_scaling, "config", "rope_scaling is"),
    "eos_lacks_end_of_text": (_eos_without_end_of_text, "generation_config", "lacks <|end_of_text|> ("),
    "resaved_tokenizer": (_resaved_tokenizer, "tokenizer_files", "re-saved instead of copied"),
    "padded_vocab_rows": (_padded_vocab_rows, "vocab_rows", "Megatron's vocab padding"),
    "tied_head": (_tied_head, "untied_lm_head", "identical to model.embed_tokens.weight"),
    "missing_shard": (_missing_shard, "safetensors_index", "which is missing"),
    "swapped_gate_up": (_swapped_gate_up, "loss_bf16", "does not compute what was trained"),
    "pad_is_eot": (_pad_is_eot, "pad_unk", "occurs in text"),
    "llama_tokenizer_class": (_llama_tokenizer_class, "tokenizer_files", "LlamaTokenizerFast"),
    "nan_weight": (_nan_weight, "finite", "model.norm.weight"),
    "no_torch_dtype": (_no_torch_dtype, "config", "torch_dtype is"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_export_fails_its_check_with_a_message_and_fix(clean, tmp_path, case):
    breaks, item, words = BROKEN[case]
    hf = clean.copy(tmp_path / "hf")
    breaks(hf)
    report = clean.check(hf, dtypes=["fp32", "bf16"] if case == "swapped_gate_up" else ["fp32"])
    found = report.item(item)
    assert found.status == FAIL, report.text()
    assert words in found.message and found.fix, found
    assert not report.ok and f"[FAIL] {item}: " in report.text() and "fix: " in report.text()


def test_swapped_gate_up_halves_pass_every_static_check_and_only_the_loss_catches_them(clean, tmp_path):
    hf = clean.copy(tmp_path / "hf")
    _swapped_gate_up(hf)
    report = clean.check(hf)
    assert [i.name for i in report.failures] == list(LOSSES), report.text()
    for name in LOSSES:
        d = report.item(name).details
        assert abs(d["delta"]) > 50 * (d["atol"] + d["rtol"] * abs(d["reference"])), d


def test_the_resaved_tokenizer_is_named_for_what_tokenizers_0_15_cannot_read(clean, tmp_path):
    hf = clean.copy(tmp_path / "hf")
    _resaved_tokenizer(hf)
    message = clean.check(hf, dtypes=[]).item("tokenizer_files").message
    assert "tokenizer.json" in message and "merges as pairs" in message


def test_a_path_naming_another_model_family_fails(clean, tmp_path):
    hf = clean.copy(tmp_path / "llama3-mistral-cot" / "hf")
    report = clean.check(hf, dtypes=[])
    item = report.item("directory_name")
    assert item.status == FAIL and "['mistral']" in item.message and "rename" in item.fix
    assert [i.name for i in report.failures] == ["directory_name"]


def test_a_dtype_other_than_the_configured_one_fails(clean):
    report = clean.check(clean.hf, dtype="bf16", dtypes=[])
    assert {i.name for i in report.failures} == {"config", "dtype"}
    assert "exported as 'bfloat16'" in report.item("config").message
    assert "expected all bfloat16" in report.item("dtype").message


def test_an_architecture_other_than_the_model_group_fails_the_config_and_shapes(clean):
    import dataclasses

    other = dataclasses.replace(kit.arch_of(clean.source), ffn_hidden_size=256, rope_theta=10000.0)
    report = clean.check(clean.hf, arch=other, dtypes=[])
    assert "ffn_hidden_size is 384, the model group says 256" in report.item("config").message
    assert "rope_theta" in report.item("config").message
    assert report.item("tensor_shapes").status == FAIL


def test_without_a_reference_the_loss_items_are_skipped_not_passed(clean):
    report = clean.check(clean.hf, megatron_dir=None)
    assert [report.item(n).status for n in LOSSES] == ["skip"] * 3
    assert report.ok and "3 skipped" in report.text()


def test_a_missing_generation_config_fails_and_finalize_writes_both_stop_ids(clean, tmp_path):
    from navila_tune.handoff import ensure_generation_config

    hf = clean.copy(tmp_path / "hf")
    (hf / "generation_config.json").unlink()
    assert clean.check(hf, dtypes=[]).item("generation_config").status == FAIL
    done = ensure_generation_config(hf)
    assert done["generation_config"] == "written" and done["eos_token_id"] == [ids(hf)[END_OF_TEXT], ids(hf)[EOT]]
    assert clean.check(hf, dtypes=[]).item("generation_config").status == PASS


def test_finalize_keeps_a_complete_generation_config_byte_for_byte_and_extends_a_short_one(clean, tmp_path):
    from navila_tune.handoff import ensure_generation_config

    hf = clean.copy(tmp_path / "hf")
    before = (hf / "generation_config.json").read_bytes()
    assert ensure_generation_config(hf)["generation_config"] == "kept"
    assert (hf / "generation_config.json").read_bytes() == before
    end, eot = ids(hf)[END_OF_TEXT], ids(hf)[EOT]
    kit.edit_json(hf / "generation_config.json", eos_token_id=eot, temperature=0.6)
    done = ensure_generation_config(hf)
    assert done == {"generation_config": "eos extended", "eos_token_id": [eot, end], "added_eos": [end]}
    assert json.loads((hf / "generation_config.json").read_text())["temperature"] == 0.6


def test_the_cli_prints_writes_the_report_and_exits_1_on_a_failure(clean, tmp_path, capsys):
    from navila_tune.handoff.cli import main

    base = ["check", "--source-tokenizer", str(clean.source), "--megatron", str(clean.megatron),
            "--data-prefix", str(clean.prefix), "--dtypes", "fp32", "--dtype", "fp32",
            "--arch", json.dumps(kit.arch_of(clean.source).to_dict())]
    assert main([*base[:1], str(clean.hf), *base[1:], "--out", str(tmp_path / "ok")]) == 0
    assert "PASS" in capsys.readouterr().out
    hf = clean.copy(tmp_path / "hf")
    _rope_scaling(hf)
    assert main([*base[:1], str(hf), *base[1:], "--out", str(tmp_path / "bad")]) == 1
    out = capsys.readouterr().out
    assert "[FAIL] config: config.json: rope_scaling is" in out and "fix: " in out
    data = json.loads((tmp_path / "bad" / "handoff_report.json").read_text())
    assert data["status"] == "fail" and "config" in data["failed"]
    bad = next(i for i in data["items"] if i["name"] == "config")
    assert bad["fix"] and bad["seconds"] >= 0
    assert (tmp_path / "bad" / "handoff_report.txt").read_text().startswith("NaVILA hand-off check of")


def test_the_model_group_option_reads_arch_and_dtype_from_conf(clean, tmp_path):
    """--model llama3_tiny: the asset config has max_position_embeddings 1024, the kit's source 8192."""
    from navila_tune.handoff.cli import _arch

    arch, dtype = _arch(None, "llama3_tiny")
    assert dtype == "fp32" and arch.max_position_embeddings == 1024
    report = clean.check(clean.hf, arch=arch, dtypes=[])
    assert "max_position_embeddings is 8192, the model group says 1024" in report.item("config").message


def test_a_check_that_crashes_is_a_failed_item_and_the_others_still_run(clean, tmp_path):
    hf = clean.copy(tmp_path / "hf")
    (hf / "config.json").write_text("{not json")
    report = clean.check(hf, dtypes=[])
    assert report.item("config").status == FAIL and "not valid JSON" in report.item("config").message
    assert report.item("tokenizer_files").status == PASS
    shutil.rmtree(hf)


def _add_token(hf, content):
    tok = json.loads((hf / "tokenizer.json").read_text())
    tok["added_tokens"].append({"id": max(t["id"] for t in tok["added_tokens"]) + 1, "content": content,
                                "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
                                "special": True})
    (hf / "tokenizer.json").write_text(json.dumps(tok))


def test_tokens_beyond_the_vocab_fail_unless_they_are_vilas_tokenizer_only_ones(clean, tmp_path):
    hf = clean.copy(tmp_path / "hf")
    _add_token(hf, "<vila/sentinel>")  # VILA's label sentinel: in the tokenizer, never embedded
    item = clean.check(hf, dtypes=[], source_tokenizer_dir=None).item("tokenizer")
    assert item.status == "warn" and "<vila/sentinel>" in item.message
    _add_token(hf, "<|my_new_token|>")
    item = clean.check(hf, dtypes=[], source_tokenizer_dir=None).item("tokenizer")
    assert item.status == FAIL and "exceeds vocab_size 1023" in item.message and "<|my_new_token|>" in item.message
