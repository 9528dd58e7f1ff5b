"""CoMP's math: token importance (CIT), token weights, weighted activation statistics and parameter importance (CIP)
against by-hand loops, and the multi-mode pruning scheduler (MPS) against its rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lmms_topo_plugin.scorers.comp import importance as imp
from lmms_topo_plugin.scorers.comp.importance import (WeightedSquares, column_importance, token_importance,
                                                      token_weights, unit_importance)
from lmms_topo_plugin.scorers.comp.schedule import MultiModeScheduler

TOL = 1e-5


def random_attention(b, h, tq, tk, seed=0):
    """Row-stochastic attention probabilities ``[B, H, Tq, Tk]``."""
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(b, h, tq, tk, generator=g) * 2.0, dim=-1)


def cit_by_hand(attn, head_mask=None, valid=None, query_valid=None):
    """CIT with explicit loops: Σ over counted queries of the max over voting heads, normalised over valid keys."""
    b_n, h_n, tq, tk = attn.shape
    rows = []
    for b in range(b_n):
        raw = []
        for i in range(tk):
            if valid is not None and not bool(valid[b][i]):
                raw.append(0.0)
                continue
            total = 0.0
            for n in range(tq):
                counted = (query_valid[b][n] if query_valid is not None
                           else valid[b][tk - tq + n] if valid is not None else True)
                if not bool(counted):
                    continue
                total += max(float(head_mask[h] if head_mask is not None else 1.0) * float(attn[b, h, n, i])
                             for h in range(h_n))
            raw.append(total)
        s = sum(raw)
        rows.append([r / s for r in raw])
    return torch.tensor(rows, dtype=torch.float64)


def cip_by_hand(weight, batches):
    """Column scores by loops: mean_i |W[i, j]| · sqrt(Σ_n ω_n X[n, j]²) over ``(x [B, T, C], ω [B, T])`` pairs."""
    out_n, in_n = weight.shape
    scores = []
    for j in range(in_n):
        sq = 0.0
        for x, w in batches:
            for b in range(x.shape[0]):
                for n in range(x.shape[1]):
                    sq += float(w[b, n]) * float(x[b, n, j]) ** 2
        mag = sum(abs(float(weight[i, j])) for i in range(out_n)) / out_n
        scores.append(mag * math.sqrt(sq))
    return torch.tensor(scores, dtype=torch.float64)


# ---------------------------------------------------------------- CIT


def test_cit_matches_loops_without_masks():
    attn = random_attention(2, 3, 5, 5)
    got = token_importance(attn)
    assert got.shape == (2, 5) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), cit_by_hand(attn), atol=TOL, rtol=0)
    torch.testing.assert_close(got.sum(1), torch.ones(2), atol=TOL, rtol=0)


def test_masked_head_with_largest_attention_does_not_vote():
    attn = random_attention(2, 3, 5, 5, seed=1)
    attn[:, 1] = 0.0
    attn[:, 1, :, 0] = 1.0  # head 1 puts all its attention on token 0: the largest value everywhere it looks
    unmasked = token_importance(attn)
    for mask in (torch.tensor([True, False, True]), torch.tensor([1.0, 0.0, 1.0]), torch.tensor([1, 0, 1])):
        got = token_importance(attn, head_mask=mask)
        torch.testing.assert_close(got.double(), cit_by_hand(attn, head_mask=[1.0, 0.0, 1.0]), atol=TOL, rtol=0)
        torch.testing.assert_close(got, token_importance(attn[:, [0, 2]]), atol=TOL, rtol=0)
    assert (unmasked[:, 0] > got[:, 0] + 0.1).all()  # with head 1 voting, token 0 dominated


def test_cit_padding_and_padded_queries():
    attn = random_attention(2, 4, 6, 6, seed=2)
    valid = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    mask = torch.tensor([1, 1, 0, 1])
    got = token_importance(attn, head_mask=mask, valid=valid)
    torch.testing.assert_close(got.double(), cit_by_hand(attn, mask.tolist(), valid), atol=TOL, rtol=0)
    assert torch.equal(got[1, 4:], torch.zeros(2))
    torch.testing.assert_close(got.sum(1), torch.ones(2), atol=TOL, rtol=0)
    poked = attn.clone()
    poked[1, :, 4:] = torch.rand(4, 2, 6)  # padded query rows of row 1 must not count
    torch.testing.assert_close(token_importance(poked, head_mask=mask, valid=valid), got, atol=0, rtol=0)


def test_cit_queries_are_the_last_positions_by_default():
    attn = random_attention(2, 2, 3, 7, seed=3)  # 3 new queries over 7 cached keys
    valid = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0, 0]])
    got = token_importance(attn, valid=valid)
    torch.testing.assert_close(got.double(), cit_by_hand(attn, valid=valid), atol=TOL, rtol=0)
    query_valid = torch.tensor([[1, 0, 1], [1, 1, 1]])
    torch.testing.assert_close(token_importance(attn, valid=valid, query_valid=query_valid).double(),
                               cit_by_hand(attn, valid=valid, query_valid=query_valid), atol=TOL, rtol=0)


def test_cit_all_heads_masked_gives_uniform_valid_scores():
    attn = random_attention(1, 2, 4, 4)
    got = token_importance(attn, head_mask=torch.zeros(2), valid=torch.tensor([[1, 1, 1, 0]]))
    torch.testing.assert_close(got, torch.tensor([[1 / 3, 1 / 3, 1 / 3, 0.0]]), atol=TOL, rtol=0)


# ---------------------------------------------------------------- token weights


def test_token_weights_mean_one_over_valid_tokens():
    g = torch.Generator().manual_seed(4)
    importance = torch.rand(3, 8, generator=g)
    valid = torch.ones(3, 8, dtype=torch.bool)
    valid[1, 5:] = False
    valid[2, 2:] = False
    w = token_weights(importance, valid)
    for b in range(3):
        n = int(valid[b].sum())
        assert abs(float(w[b][valid[b]].sum()) / n - 1.0) < TOL
        assert torch.equal(w[b][~valid[b]], torch.zeros(8 - n))
        ratios = w[b][valid[b]] / importance[b][valid[b]]  # a rescaling: ratios kept
        torch.testing.assert_close(ratios, ratios[0].expand_as(ratios), atol=TOL, rtol=TOL)


def test_token_weights_uniform_and_plain_are_ones():
    valid = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0, 0]], dtype=torch.bool)
    uniform = valid.float() / valid.sum(1, keepdim=True)
    assert torch.equal(token_weights(uniform, valid), valid.float())
    assert torch.equal(token_weights(torch.full((2, 7), 0.3)), torch.ones(2, 7))
    assert torch.equal(token_weights(None, valid), valid.float())
    assert torch.equal(token_weights(torch.zeros(2, 7), valid), valid.float())  # nothing to go on: plain
    with pytest.raises(ValueError):
        token_weights(None)
    with pytest.raises(ValueError):
        token_weights(-uniform, valid)


# ---------------------------------------------------------------- weighted statistics and CIP


def calibration_batches(seed=5):
    g = torch.Generator().manual_seed(seed)
    out = []
    for t in (5, 4):
        x = torch.randn(2, t, 6, generator=g)
        valid = torch.ones(2, t, dtype=torch.bool)
        valid[1, t - 2:] = False
        out.append((x, valid, torch.rand(2, t, generator=g)))
    return out


def test_cip_matches_loops_with_token_weights():
    weight = torch.randn(4, 6, generator=torch.Generator().manual_seed(6))
    stats = WeightedSquares()
    pairs = []
    for x, valid, importance in calibration_batches():
        w = token_weights(importance, valid)
        stats.add(x, w)
        pairs.append((x, w))
    assert stats.total.dtype == torch.float64 and stats.tokens == 5 + 3 + 4 + 2
    scores = column_importance(weight, stats)
    torch.testing.assert_close(scores, cip_by_hand(weight, pairs), atol=TOL, rtol=0)
    units = unit_importance(scores, 2)
    by_hand = torch.tensor([float(scores[2 * u]) + float(scores[2 * u + 1]) for u in range(3)], dtype=torch.float64)
    torch.testing.assert_close(units, by_hand, atol=TOL, rtol=0)
    with pytest.raises(ValueError):
        unit_importance(scores, 4)


def test_unit_weights_give_exactly_plain_wanda():
    weight = torch.randn(4, 6, generator=torch.Generator().manual_seed(7))
    plain, uniform, flat = WeightedSquares(), WeightedSquares(), WeightedSquares()
    kept = []
    for x, valid, _ in calibration_batches():
        plain.add(x, token_weights(None, valid))
        uniform.add(x, token_weights(valid.float(), valid))  # uniform importance
        flat.add(x[valid])  # [N, C], no weights: ω ≡ 1 on the real tokens
        kept.append(x[valid])
    assert torch.equal(plain.total, uniform.total) and torch.equal(plain.total, flat.total)
    assert plain.tokens == flat.tokens == 14 and plain.weight_sum == flat.weight_sum == 14.0
    x_all = torch.cat(kept).double()
    wanda = weight.double().abs().mean(0) * torch.linalg.vector_norm(x_all, dim=0)
    torch.testing.assert_close(column_importance(weight, plain), wanda, atol=1e-12, rtol=1e-12)


def test_weighted_squares_chunks_and_shapes(monkeypatch):
    x, valid, importance = calibration_batches()[0]
    w = token_weights(importance, valid)
    whole = WeightedSquares()
    whole.add(x, w)
    monkeypatch.setattr(imp, "_CHUNK_ELEMENTS", 7)  # one row per chunk
    chunked = WeightedSquares()
    chunked.add(x, w)
    torch.testing.assert_close(chunked.total, whole.total, atol=1e-12, rtol=1e-12)
    with pytest.raises(ValueError):
        chunked.add(x[..., :5])
    with pytest.raises(ValueError):
        chunked.add(x, w[:, :2])
    with pytest.raises(ValueError):
        WeightedSquares().total


# ---------------------------------------------------------------- scheduler

V, L, T = "vision_params", "language_params", "vision_tokens"
MODES = [V, L, T]
# each mode's cost as a fixed function of how many times it has run before (k)
COSTS = {V: lambda k: 1.0 + 1.0 * k, L: lambda k: 1.5 + 0.25 * k, T: lambda k: 0.5 + 2.0 * k}


def drive(scheduler, stages, modes=MODES, costs=COSTS):
    """Run ``stages`` stages against the scripted cost table; the (mode, why) sequence."""
    runs = {m: 0 for m in modes}
    seq = []
    for _ in range(stages):
        mode, why = scheduler.next_mode(modes)
        scheduler.report(mode, costs[mode](runs[mode]))
        runs[mode] += 1
        seq.append((mode, why))
    return seq


def test_scheduler_exact_sequence_without_exploration():
    # by hand, λ = max(0.4 − 0.08·(I − 1), 0):
    # 0-2 warm-up V(1.0) L(1.5) T(0.5)
    # 3 T cheapest, I=1 λ=.40, cost 2.5 → .4·.5 + .6·2.5 = 1.7
    # 4 V (1.0), I=4 λ=.16, cost 2.0 → .16·1 + .84·2 = 1.84
    # 5 L (1.5), I=4 λ=.16, cost 1.75 → .24 + 1.47 = 1.71
    # 6 T (1.7 < 1.71 < 1.84), I=3 λ=.24, cost 4.5 → .408 + 3.42 = 3.828
    # 7 L (1.71), I=2 λ=.32, cost 2.0 → .5472 + 1.36 = 1.9072
    # 8 V (1.84), I=4 λ=.16, cost 3.0 → .2944 + 2.52 = 2.8144
    # 9 L (1.9072), I=2 λ=.32, cost 2.25 → 2.140304
    # 10-12 L (< 2.8144), I=1 λ=.4, costs 2.5, 2.75, 3.0 → 2.3561216, 2.59244864, 2.836979456
    # 13 V (2.8144 < 2.837), I=5 λ=.08, cost 4.0 → .225152 + 3.68 = 3.905152
    # 14 L (2.837 < 3.828 < 3.905)
    expected = [V, L, T, T, V, L, T, L, V, L, L, L, L, V, L]
    s = MultiModeScheduler(explore=False)
    seq = drive(s, len(expected))
    assert [m for m, _ in seq] == expected
    assert [w for _, w in seq] == ["warmup"] * 3 + ["cheapest"] * 12
    smoothed = {r.stage: r.smoothed for r in s.history}
    for stage, value in {3: 1.7, 4: 1.84, 5: 1.71, 6: 3.828, 7: 1.9072, 8: 2.8144, 9: 2.140304,
                         12: 2.836979456, 13: 3.905152}.items():
        assert smoothed[stage] == pytest.approx(value, abs=1e-12)
    assert s.history_rows()[6] == {"stage": 6, "mode": T, "why": "cheapest", "cost": 4.5,
                                   "smoothed": pytest.approx(3.828)}


def reference_sequence(seed, stages, lambda0=0.4, i_max=5, rho=0.2, tau=5.0):
    """The rules, written out independently: one uniform draw per post-warm-up stage, one choice when exploring."""
    rng = np.random.default_rng(seed)
    last, smooth, runs, seq = {}, {}, {m: 0 for m in MODES}, []
    for t in range(stages):
        never = [m for m in MODES if m not in smooth]
        if never:
            mode, why = never[0], "warmup"
        elif rng.random() < rho:
            expo = [math.exp((t - last[m]) / tau) for m in MODES]
            probs = [e / sum(expo) for e in expo]
            mode, why = MODES[int(rng.choice(len(MODES), p=probs))], "explore"
        else:
            mode, why = MODES[0], "cheapest"
            for m in MODES:
                if smooth[m] < smooth[mode]:
                    mode = m
        cost = COSTS[mode](runs[mode])
        runs[mode] += 1
        if mode in smooth:
            lam = max(lambda0 - lambda0 / i_max * (t - last[mode] - 1), 0.0)
            smooth[mode] = lam * smooth[mode] + (1 - lam) * cost
        else:
            smooth[mode] = cost
        last[mode] = t
        seq.append((mode, why))
    return seq


def test_scheduler_seeded_sequence_and_determinism():
    stages = 60
    seq = drive(MultiModeScheduler(seed=3), stages)
    assert seq == reference_sequence(3, stages)
    assert {w for _, w in seq} == {"warmup", "explore", "cheapest"}
    assert drive(MultiModeScheduler(seed=3), stages) == seq
    long = {seed: drive(MultiModeScheduler(seed=seed), 200) for seed in (0, 1)}
    assert long[0] != long[1]


def test_scheduler_lambda_by_hand():
    s = MultiModeScheduler(lambda0=0.4, i_max=5)
    assert [s.smoothing(i) for i in (1, 2, 3, 6, 9)] == pytest.approx([0.4, 0.32, 0.24, 0.0, 0.0])
    s.report("a", 2.0)  # stage 0
    s.report("b", 9.0)  # stage 1
    s.report("b", 9.0)  # stage 2
    assert s.interval("a") == 3 and s.interval("b") == 1
    rec = s.report("a", 1.0)  # stage 3, I=3: λ = 0.4 − 0.08·2 = 0.24 → 0.24·2 + 0.76·1
    assert rec.smoothed == pytest.approx(1.24, abs=1e-12) and rec.why == "forced"
    for _ in range(5):
        s.report("b", 9.0)  # stages 4-8
    assert s.interval("a") == 6
    assert s.report("a", 7.0).smoothed == 7.0  # I=6: λ = 0, the old estimate is dropped
    assert s.report("a", 3.0).smoothed == pytest.approx(0.4 * 7.0 + 0.6 * 3.0, abs=1e-12)  # I=1: λ = λ0


def test_scheduler_no_exploration_and_available_modes():
    s = MultiModeScheduler(explore=False, rho=1.0)
    seq = drive(s, 300)
    assert all(w != "explore" for _, w in seq)
    s = MultiModeScheduler(rho=1.0)
    drive(s, 3)
    for _ in range(50):
        assert s.next_mode([V, T])[0] in (V, T)
    with pytest.raises(ValueError):
        s.next_mode([])


def test_exploration_rate_and_softmax_frequencies():
    s = MultiModeScheduler(seed=11, explore=False)
    for mode, cost in (("a", 10.0), ("b", 5.0), ("c", 1.0)):  # warm-up, stages 0-2
        assert s.next_mode(["a", "b", "c"]) == (mode, "warmup")
        s.report(mode, cost)
    for _ in range(5):  # stages 3-7: c is cheapest
        assert s.next_mode(["a", "b", "c"]) == ("c", "cheapest")
        s.report("c", 1.0)
    intervals = [s.interval(m) for m in "abc"]
    assert intervals == [8, 7, 1]  # stage 8; next_mode alone does not move the stage, so I stays fixed
    s.explore = True
    draws = 20_000
    counts = {"a": 0, "b": 0, "c": 0}
    explored = 0
    for _ in range(draws):
        mode, why = s.next_mode(["a", "b", "c"])
        if why == "explore":
            explored += 1
            counts[mode] += 1
        else:
            assert (mode, why) == ("c", "cheapest")
    rho = s.rho
    assert abs(explored - draws * rho) <= 4 * math.sqrt(draws * rho * (1 - rho))
    expo = [math.exp(i / s.tau) for i in intervals]
    for mode, e in zip("abc", expo):
        p = e / sum(expo)
        assert abs(counts[mode] - explored * p) <= 4 * math.sqrt(explored * p * (1 - p)), (mode, counts, p)
