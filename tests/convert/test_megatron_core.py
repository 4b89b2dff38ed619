"""(b) Converted checkpoints load strictly into megatron-core's GPTModel and match HF logits (fp32, CPU)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("megatron.core")

from convert_helpers import LAYOUTS  # noqa: E402
from convert_mcore import build_gpt_model, forward  # noqa: E402

from navila_tune.convert import hf_to_megatron, reshard  # noqa: E402

# every head layout at every TP it allows (TP must divide the query groups), PP 1 and 2, one uneven split
CASES = ([(name, tp, pp, None) for name in ("gqa", "mha") for tp in (1, 2, 4) for pp in (1, 2)]
         + [("mqa", 1, pp, None) for pp in (1, 2)] + [("gqa", 2, 3, [2, 1, 1]), ("mha", 4, 2, [3, 1])])


def _merged_tp1(src, tmp_path, tp, pp, nll, divisor=4) -> dict:
    hf_to_megatron(src, tmp_path / "mg", tp=tp, pp=pp, num_layer_list=nll, dtype="fp32",
                   make_vocab_size_divisible_by=divisor, progress=False)
    reshard(tmp_path / "mg", tmp_path / "tp1", tp=1, pp=1, progress=False)
    files = list((tmp_path / "tp1").glob("iter_0000001/mp_rank_00/model_optim_rng.pt"))
    assert len(files) == 1
    return torch.load(files[0], weights_only=False)


def _hf_logits(src, ids):
    model = transformers.LlamaForCausalLM.from_pretrained(src, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-tp{c[1]}-pp{c[2]}" + ("-nll" if c[3] else ""))
def test_megatron_core_loads_strictly_and_matches_hf_logits(case, hf_models, tmp_path, megatron_cpu):
    name, tp, pp, nll = case
    tiny = LAYOUTS[name]
    src = hf_models[(name, "float32")]
    ckpt = _merged_tp1(src, tmp_path, tp, pp, nll)
    padded = ckpt["args"].padded_vocab_size
    assert padded == 104  # 101 padded to a multiple of 4 (divisor 4 x TP 1 after merging)

    model = build_gpt_model(tiny.arch(), padded)
    model.load_state_dict(ckpt["model"], strict=True)

    ids = torch.randint(0, tiny.vocab, (2, 11), generator=torch.Generator().manual_seed(1))
    logits = forward(model, ids)
    ref = _hf_logits(src, ids)
    assert logits.shape == (2, 11, padded)
    torch.testing.assert_close(logits[..., : tiny.vocab], ref, rtol=0, atol=1e-5)
    # padding rows replicate the last real row of the output layer
    torch.testing.assert_close(logits[..., tiny.vocab:], ref[..., -1:].expand(-1, -1, padded - tiny.vocab),
                               rtol=0, atol=1e-5)


@pytest.mark.parametrize("corrupt", ["swap_gate_up", "ungrouped_qkv"])
def test_logit_check_detects_layout_bugs(corrupt, hf_models, tmp_path, megatron_cpu):
    """The comparison above is sensitive to the two classic conversion bugs."""
    tiny = LAYOUTS["gqa"]
    src = hf_models[("gqa", "float32")]
    ckpt = _merged_tp1(src, tmp_path, 1, 1, None)
    state = dict(ckpt["model"])
    a = tiny.arch()
    for i in range(a.num_layers):
        if corrupt == "swap_gate_up":
            key = f"decoder.layers.{i}.mlp.linear_fc1.weight"
            gate, up = state[key].chunk(2)
            state[key] = torch.cat([up, gate])
        else:  # [q; k; v] concatenated globally instead of per query group
            key = f"decoder.layers.{i}.self_attention.linear_qkv.weight"
            d, ng = a.kv_channels, a.num_query_groups
            grouped = state[key].view(ng, -1, a.hidden_size)
            q = grouped[:, : -2 * d].reshape(-1, a.hidden_size)
            k = grouped[:, -2 * d: -d].reshape(-1, a.hidden_size)
            v = grouped[:, -d:].reshape(-1, a.hidden_size)
            state[key] = torch.cat([q, k, v])
    model = build_gpt_model(a, ckpt["args"].padded_vocab_size)
    model.load_state_dict(state, strict=True)
    ids = torch.randint(0, tiny.vocab, (2, 11), generator=torch.Generator().manual_seed(1))
    diff = (forward(model, ids)[..., : tiny.vocab] - _hf_logits(src, ids)).abs().max()
    assert diff > 1e-3


def test_tensor_parallel_rank_files_run_in_megatron_core_tp2(hf_models, tmp_path):
    """Each TP rank file, unmerged, loads strictly into its rank of a TP=2 GPTModel (2 gloo processes)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from convert_helpers import free_port

    name = "gqa"
    tiny = LAYOUTS[name]
    src = hf_models[(name, "float32")]
    hf_to_megatron(src, tmp_path / "mg", tp=2, pp=1, dtype="fp32", make_vocab_size_divisible_by=4, progress=False)
    padded = 104  # 101 -> multiple of 4 x 2
    ids = torch.randint(0, tiny.vocab, (2, 11), generator=torch.Generator().manual_seed(2))
    torch.save(ids, tmp_path / "ids.pt")
    worker = Path(__file__).resolve().parent / "convert_mcore_tp_worker.py"
    port = str(free_port())
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(worker), str(r), "2", port,
                               str(tmp_path / f"mg/iter_0000001/mp_rank_{r:02d}/model_optim_rng.pt"),
                               json.dumps(tiny.arch().to_dict()), str(padded), str(tmp_path / "ids.pt"),
                               str(tmp_path / "logits.pt")], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for r in range(2)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outputs)
    logits = torch.load(tmp_path / "logits.pt")
    torch.testing.assert_close(logits[..., : tiny.vocab], _hf_logits(src, ids), rtol=0, atol=1e-5)
