"""The lr schedule is Megatron's: checked against the formula and against megatron-core's own scheduler."""

from __future__ import annotations

import math
import warnings

import pytest

from navila_tune.native.schedule import LRSchedule

LR, MIN_LR, ITERS, GBS, WARMUP = 2e-5, 2e-6, 5000, 512, 0.03  # the seed recipe


def _sched(style="cosine", warmup=WARMUP) -> LRSchedule:
    return LRSchedule.for_run(lr=LR, min_lr=MIN_LR, warmup_ratio=warmup, train_iters=ITERS,
                              global_batch_size=GBS, decay_style=style)


def _formula(iteration: int) -> float:
    """Megatron's cosine schedule, written out in iterations (samples = (iteration - 1) * GBS)."""
    steps = (iteration - 1) * GBS
    warmup, decay = WARMUP * ITERS * GBS, ITERS * GBS
    if steps <= warmup:
        return LR * steps / warmup
    ratio = (steps - warmup) / (decay - warmup)
    return MIN_LR + 0.5 * (math.cos(math.pi * ratio) + 1.0) * (LR - MIN_LR)


def test_lr_at_warmup_end_mid_decay_and_last_iteration_match_the_formula():
    s = _sched()
    warmup_end = int(WARMUP * ITERS) + 1  # iteration whose step runs at num_steps == warmup samples
    assert s.lr_for_iteration(warmup_end, GBS) == pytest.approx(LR, rel=1e-12)
    assert s.lr_for_iteration(1, GBS) == 0.0  # Megatron's first step runs at lr_warmup_init
    mid = warmup_end + (ITERS + 1 - warmup_end) // 2
    assert s.lr_for_iteration(mid, GBS) == pytest.approx(_formula(mid), rel=1e-12)
    assert s.lr_for_iteration(mid, GBS) == pytest.approx((LR + MIN_LR) / 2, rel=1e-3)
    assert s.lr_for_iteration(ITERS, GBS) == pytest.approx(_formula(ITERS), rel=1e-12)
    assert MIN_LR < s.lr_for_iteration(ITERS, GBS) < MIN_LR * 1.001
    for it in (2, 50, 151, 152, 1000, 4999):
        assert s.lr_for_iteration(it, GBS) == pytest.approx(_formula(it), rel=1e-12)


@pytest.mark.parametrize("style", ["cosine", "linear", "constant", "inverse-square-root"])
def test_schedule_equals_megatron_core_optimizer_param_scheduler(style):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    class _Opt:
        param_groups = [{}]

    iters, gbs = 40, 8
    ours = LRSchedule.for_run(lr=1e-3, min_lr=1e-4, warmup_ratio=0.1, train_iters=iters,
                              global_batch_size=gbs, decay_style=style)
    theirs = OptimizerParamScheduler(
        _Opt(), init_lr=0.0, max_lr=1e-3, min_lr=1e-4, lr_warmup_steps=0.1 * iters * gbs,
        lr_decay_steps=iters * gbs, lr_decay_style=style, start_wd=0.1, end_wd=0.1,
        wd_incr_steps=iters * gbs, wd_incr_style="constant")
    for iteration in range(1, iters + 1):
        # Megatron: the step of `iteration` runs with the lr set by the previous scheduler.step(gbs).
        assert ours.lr_for_iteration(iteration, gbs) == pytest.approx(_Opt.param_groups[0]["lr"], rel=1e-12)
        theirs.step(gbs)
    assert ours.megatron_state_dict(iters * gbs, 0.1) == theirs.state_dict()


def test_bad_schedule_settings_are_named():
    with pytest.raises(ValueError, match="lr_decay_style='WSD'"):
        _sched(style="WSD")
    with pytest.raises(ValueError, match="warmup_ratio=1.0"):
        _sched(warmup=1.0)
