"""The phase learning-rate schedule: linear warmup to the peak, cosine down to 10% of it."""

import math

import pytest

from align.pretrain.schedule import learning_rate, warmup_steps


def test_learning_rate_matches_the_formula_at_warmup_end_mid_phase_and_phase_end():
    total, peak = 400, 3e-4
    warmup = warmup_steps(total, 0.025)
    assert warmup == 10
    assert learning_rate(0, total, peak) == pytest.approx(peak / 10)
    assert learning_rate(warmup - 1, total, peak) == pytest.approx(peak)
    # Mid-way through the cosine part the rate is halfway between the peak and the floor.
    middle = warmup - 1 + (total - warmup) // 2
    assert learning_rate(middle, total, peak) == pytest.approx(0.1 * peak + 0.9 * peak * 0.5)
    assert learning_rate(total - 1, total, peak) == pytest.approx(0.1 * peak)


def test_learning_rate_follows_a_cosine_between_warmup_and_end():
    total, peak = 100, 1.0
    for step in (20, 50, 80):
        progress = (step + 1 - 3) / (total - 3)
        expected = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))
        assert learning_rate(step, total, peak) == pytest.approx(expected)
    rates = [learning_rate(s, total, peak) for s in range(3, total)]
    assert all(a >= b for a, b in zip(rates, rates[1:], strict=False))
