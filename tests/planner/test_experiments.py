"""The seed's literal request is refused, the shipped experiments fit, and the plan only offers layouts
the validator accepts."""

from __future__ import annotations

import re
import time

import pytest

from navila_testing import compose, experiments
from navila_tune.planner import RunShape, candidates, check_fits, estimate, render_plan
from navila_tune.planner.layouts import overrides
from navila_tune.validate import ConfigError, Problem, validate

SEED_REQUESTS = [
    ["+experiment=cot_8b", "hardware=910b_x1"],  # the seed's full SFT on one NPU (layout TP4 as shipped)
    ["+experiment=cot_8b", "hardware=910b_x1", "parallelism=tp1_pp4"],  # the seed's literal TP1/PP4
    ["+experiment=cot_8b", "hardware=910b_x1", "parallelism=tp1_pp1"],  # the only layout one NPU can run
]


@pytest.mark.parametrize("request_", SEED_REQUESTS, ids=lambda r: " ".join(r[1:]))
def test_seed_full_sft_on_one_npu_is_refused_with_memory_and_fixes(request_):
    (problem,) = check_fits(compose(*request_))
    p = Problem(*problem)  # what validation wraps it in
    assert p.key == "hardware.memory_gb" and p.value == 64
    needed = float(re.search(r"(?:needs at least|peak memory) ([\d.]+) GB", p.message).group(1))
    assert needed > 140  # 8.03 B params x 18 B of weights, fp32 grads, master and Adam states alone: 144.5 GB
    assert "60.8 GB usable" in p.message
    assert "+experiment=cot_8b_lora_1npu" in p.fix
    assert "910b_x8 (8 devices)" in p.fix and "hardware=910b_x8" in p.fix
    assert "allow_oom_risk=true" in p.fix


def test_refusal_names_the_breakdown():
    (problem,) = check_fits(compose(*SEED_REQUESTS[2]))
    for term in ("weights", "gradients", "optimizer", "activations", "reserve"):
        assert re.search(rf"{term} [\d.]+", problem.message), term
    assert "optimizer 96.4" in problem.message  # 8,030,261,248 x 12 B (fp32 master + Adam), not sharded


def test_validation_reports_the_memory_problem_once():
    cfg = compose(*SEED_REQUESTS[2])
    with pytest.raises(ConfigError) as err:
        validate(cfg, extra_checks=[lambda c, layout: [Problem(*p) for p in check_fits(c)]])
    assert sum(p.key == "hardware.memory_gb" for p in err.value.problems) == 1


def test_allow_oom_risk_overrides():
    assert check_fits(compose(*SEED_REQUESTS[0], "allow_oom_risk=true")) == []


@pytest.mark.parametrize("name", experiments())
def test_shipped_experiments_fit(name):
    cfg = compose(f"+experiment={name}")
    assert check_fits(cfg) == []
    b = estimate(cfg)
    assert b.fits and b.total_gb < cfg.hardware.memory_gb * (1 - cfg.hardware.memory_margin)


def test_shipped_8b_experiments_estimates():
    full = estimate(compose("+experiment=cot_8b"))
    lora = estimate(compose("+experiment=cot_8b_lora_1npu"))
    assert full.total_gb == pytest.approx(49.1, abs=0.1)  # TP4 PP1 DP2, distributed optimizer, MBS 4
    assert lora.total_gb == pytest.approx(41.5, abs=0.1)  # TP1, LoRA r16, MBS 1, no recompute


def test_shipped_layouts_are_the_planners_choice_or_within_15_percent_of_it():
    lora = compose("+experiment=cot_8b_lora_1npu")
    best = candidates(lora)[0].shape
    mine = RunShape.from_config(lora)
    assert (best.tp, best.pp, best.micro_batch_size, best.recompute_granularity) == \
        (mine.tp, mine.pp, mine.micro_batch_size, mine.recompute_granularity)
    full = compose("+experiment=cot_8b")
    ranked = candidates(full)
    configured = next(c for c in ranked if (c.shape.tp, c.shape.pp, c.shape.micro_batch_size,
                                            c.shape.distributed_optimizer, c.shape.recompute_granularity,
                                            c.shape.num_layer_list) == (4, 1, 4, True, None, None))
    assert configured.relative_throughput >= 0.85


def _accepted_by_validator_rules(s: RunShape) -> bool:
    a = s.arch
    layers_ok = (sum(s.num_layer_list) == a.num_layers and len(s.num_layer_list) == s.pp) if s.num_layer_list \
        else a.num_layers % s.pp == 0
    return (a.num_attention_heads % s.tp == 0 and a.num_query_groups % s.tp == 0 and layers_ok
            and s.tp * s.pp * s.cp * s.dp == s.world_size
            and s.global_batch_size % (s.micro_batch_size * s.dp) == 0)


def test_plan_for_8b_on_8_npus_lists_only_layouts_the_validator_accepts():
    cfg = compose("+experiment=cot_8b")
    ranked = candidates(cfg)
    assert len(ranked) > 20
    assert all(_accepted_by_validator_rules(c.shape) and c.fits for c in ranked)
    assert [c.relative_throughput for c in ranked] == sorted((c.relative_throughput for c in ranked), reverse=True)
    assert {(c.shape.tp, c.shape.pp) for c in ranked} >= {(1, 4), (2, 2), (4, 1), (8, 1)}
    # The real validator accepts the top rows, reached through the overrides the planner prints.
    shown = ranked[:8] + [c for c in ranked if c.shape.num_layer_list][:2]
    for c in shown:
        ov = overrides(cfg, c.shape)
        cfg2 = compose("+experiment=cot_8b", *ov)
        validate(cfg2)  # raises ConfigError listing problems
        got = RunShape.from_config(cfg2)
        assert got == c.shape.replace(labels=got.labels), ov


@pytest.mark.parametrize("request_, method", [
    (SEED_REQUESTS[0], "LoRA"),  # nothing full fits one NPU: LoRA here, or a bigger hardware group
    (["+experiment=cot_8b", "hardware.reserve_gb=16"], "full SFT"),  # 62.1 GB: other layouts still fit
])
def test_alternative_overrides_compose_to_the_suggested_run(request_, method):
    cfg = compose(*request_)
    (problem,) = check_fits(cfg)
    alternatives = re.findall(r"^ +\d\. (.+)$", problem.fix, re.M)
    assert len(alternatives) == 3 and all(method in a for a in alternatives)
    lines = [m.group(1) for m in re.finditer(r"overrides: (.+)", problem.fix)]
    assert len(lines) >= 3
    for line in lines:
        cfg2 = compose(*request_, *line.split())
        assert check_fits(cfg2) == []
        validate(cfg2)


def test_render_plan_shows_breakdown_and_ranked_table():
    text = render_plan(compose("+experiment=cot_8b"))
    assert "Per-rank peak memory" in text and "49.10" in text
    for term in ("weights", "gradients", "optimizer", "activations", "reserve", "total"):
        assert re.search(rf"^  {term} +[\d.]+", text, re.M), term
    assert "Candidate layouts on 910b_x8" in text and "rel thr" in text
    rows = re.findall(r"^ +(\d+) +\d+ +\d+ +\d+ +\d+ +\d+ ", text, re.M)
    assert rows[:3] == ["1", "2", "3"]
    seed = render_plan(compose(*SEED_REQUESTS[0]))
    assert "not valid here" in seed and "cot_8b_lora_1npu" in seed and "910b_x8" in seed


def test_planner_is_fast_enough_for_the_dry_run():
    cfg = compose("+experiment=cot_8b")
    t0 = time.perf_counter()
    check_fits(cfg)
    check_ms = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    render_plan(cfg)
    plan_ms = (time.perf_counter() - t0) * 1000
    assert check_ms < 100 and plan_ms < 500, (check_ms, plan_ms)
