"""The overlong policies on hand-computed cases (MindSpeed's infer_max_len / _infer_seqlen arithmetic)."""

from __future__ import annotations

import pytest

from navila_tune.data.truncation import Overlong, fit, infer_max_len, infer_seqlen, make_pairs


def _messages(*lengths: int) -> list[list[int]]:
    return [list(range(100 * i, 100 * i + n)) for i, n in enumerate(lengths)]


def test_infer_max_len_and_infer_seqlen_by_hand():
    assert infer_max_len(10, 50, 64, 1) == (14, 53)  # int(64 * 50/60) = 53; 64 - min(53, 50) = 14
    assert infer_max_len(5, 40, 4, 1) == (1, 3)  # int(4 * 40/45) = 3
    assert infer_max_len(300, 0, 64, 1) == (64, 1)  # reserved label length 1
    assert infer_seqlen(10, 50, 63) == (10, 50)  # target fits beside a short source
    assert infer_seqlen(100, 20, 63) == (43, 20)  # short target kept, source cut
    assert infer_seqlen(100, 100, 63) == (32, 31)  # both cut: int(63 * 100/200) = 31


def test_make_pairs_multi_turn_by_hand():
    msgs = _messages(10, 50, 5, 40)
    pairs = make_pairs(msgs, 64)
    assert [(len(s), len(t)) for s, t in pairs] == [(10, 50), (1, 3)]
    assert pairs[1] == (msgs[2][:1], msgs[3][:3])  # prefixes are kept, never the middle
    assert [(len(s), len(t)) for s, t in make_pairs(_messages(70, 10, 5, 5), 64)] == [(56, 8)]  # int(64*10/80)=8; turn 2 gone


def test_policies_on_a_multi_turn_sample():
    msgs = _messages(10, 50, 5, 40)  # 105 tokens, seq_length 64
    dropped = fit(msgs, 64, "mindspeed", neat_pack=False, append_eod=False)
    assert not dropped.kept and dropped.full_len == 105  # truncated to exactly 64, then dropped (>= 64)
    neat = fit(msgs, 64, "mindspeed", neat_pack=True, append_eod=False)
    assert neat.kept and neat.length == 63 and neat.cut_to == 63 and neat.truncated
    kept = fit(msgs, 64, "truncate", neat_pack=False, append_eod=True)
    assert kept.kept and [(len(s), len(t)) for s, t in kept.pairs] == [(10, 50), (1, 1)] and kept.length == 63
    with pytest.raises(Overlong) as err:
        fit(msgs, 64, "fail", neat_pack=False, append_eod=False)
    assert err.value.full_len == 105


@pytest.mark.parametrize("policy", ["mindspeed", "truncate", "fail"])
@pytest.mark.parametrize("neat", [False, True])
def test_a_fitting_sample_is_never_touched(policy, neat):
    msgs = _messages(10, 20, 5, 27)  # 62 + eod = 63 < 64
    f = fit(msgs, 64, policy, neat_pack=neat, append_eod=True)
    assert f.kept and not f.truncated and f.length == 63 and f.pairs == [(msgs[0], msgs[1]), (msgs[2], msgs[3])]


def test_eod_makes_a_sample_overlong_exactly_as_mindspeed():
    msgs = _messages(10, 53)  # 63 tokens fit; the EOD makes 64 >= 64: dropped
    assert fit(msgs, 64, "mindspeed", neat_pack=False, append_eod=False).kept
    assert not fit(msgs, 64, "mindspeed", neat_pack=False, append_eod=True).kept
