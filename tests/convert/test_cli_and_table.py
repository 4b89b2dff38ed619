"""The command line, the progress display and the weight table's invariants."""

from __future__ import annotations

import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from convert_helpers import LAYOUTS, read_hf_tensors  # noqa: E402

from navila_tune.convert import hf_to_megatron, weights  # noqa: E402
from navila_tune.convert.cli import build_parser, main  # noqa: E402


def test_cli_round_trip_and_reshard(hf_models, tmp_path, capsys):
    src = hf_models[("gqa", "bfloat16")]
    assert main(["hf2mg", "--hf-dir", str(src), "--out-dir", str(tmp_path / "mg"), "--tp", "2", "--pp", "2",
                 "--num-layer-list", "3,1", "--quiet"]) == 0
    assert main(["mg2mg", "--mg-dir", str(tmp_path / "mg"), "--out-dir", str(tmp_path / "mg1"), "--tp", "1",
                 "--pp", "1", "--quiet"]) == 0
    assert main(["mg2hf", "--mg-dir", str(tmp_path / "mg1"), "--source-hf-dir", str(src), "--out-dir",
                 str(tmp_path / "hf"), "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    a, b = read_hf_tensors(src), read_hf_tensors(tmp_path / "hf")
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_cli_help_names_every_command():
    out = subprocess.run([sys.executable, "-m", "navila_tune.convert", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for word in ("hf2mg", "mg2hf", "mg2mg", "examples:"):
        assert word in out.stdout
    sub = build_parser().parse_args(["mg2hf", "--mg-dir", "a", "--source-hf-dir", "b", "--out-dir", "c"])
    assert sub.dtype is None and sub.iteration is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["hf2mg", "--hf-dir", "a", "--out-dir", "b", "--tp", "1", "--pp", "1",
                                   "--num-layer-list", "1;3"])


def test_progress_shows_bytes_rate_and_files(hf_models, tmp_path, capsys):
    hf_to_megatron(hf_models[("gqa", "bfloat16")], tmp_path / "mg", tp=2, pp=2, progress=True)
    err = capsys.readouterr().err
    assert "hf2mg" in err and "100%" in err and "B/s" in err and "file 3-4/4 mp_rank_00_001..mp_rank_01_001" in err
    hf_to_megatron(hf_models[("gqa", "bfloat16")], tmp_path / "mg2", tp=2, pp=2, progress=False)
    assert capsys.readouterr().err == ""


def test_every_hf_tensor_belongs_to_exactly_one_entry():
    names = [n for e in weights.TABLE for n in e.hf]
    assert len(names) == len(set(names)) == 12  # 9 per layer + embedding, final norm, lm_head
    assert len(weights.expected_hf_names(2)) == 2 * 9 + 3
    bad = (*weights.TABLE, weights.Replicated(weights.LAYER, "decoder.layers.{i}.x.weight",
                                              hf_name="model.layers.{i}.input_layernorm.weight"))
    with pytest.raises(AssertionError, match=r"names HF tensors twice: \['model\.layers\.\{i\}\.input_layernorm"):
        weights._check_table(bad)


def test_megatron_keys_follow_megatron_core_state_dict_order(megatron_cpu):
    from convert_mcore import build_gpt_model

    from navila_tune.convert.parallel import ParallelLayout

    arch = LAYOUTS["gqa"].arch()
    mcore = [k for k in build_gpt_model(arch, 104).state_dict() if k != "output_layer._extra_state"]
    assert ParallelLayout(arch, 1, 1).stage_keys(0) == mcore


@pytest.mark.parametrize("layout,tp,padded,hf_vocab", [
    (name, tp, padded, vocab) for name in ("gqa", "mha", "mqa")
    for tp, padded, vocab in ((1, 101, 101), (2, 104, 101), (4, 128, 101), (4, 104, 104))
    if LAYOUTS[name].groups % tp == 0])
def test_pieces_tile_every_tensor_exactly_once(layout, tp, padded, hf_vocab):
    """Element level: each HF element is copied once (padding rows aside) and each rank element written once."""
    from navila_tune.convert.weights import ShardContext

    arch = LAYOUTS[layout].arch()
    ctx = ShardContext(arch, tp, padded, hf_vocab)
    for entry in weights.TABLE:
        hf_cover = [torch.zeros(s[:2] if len(s) > 1 else s + (1,)) for s in entry.hf_shapes(ctx)]
        mg_cover = [torch.zeros(s[:2] if len(s) > 1 else s + (1,)) for s in entry.shard_shapes(ctx)]
        for p in entry.pieces(ctx):
            mg_cover[p.rank].narrow(p.dim, p.mg_start, p.length).add_(1)
            if not p.broadcast and not (entry.replicated and p.rank):
                hf_cover[p.hf].narrow(p.dim, p.hf_start, p.length).add_(1)
        assert all(torch.equal(c, torch.ones_like(c)) for c in hf_cover + mg_cover), entry.mg
