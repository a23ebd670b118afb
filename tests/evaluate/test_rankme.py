"""RankMe against a hand computation (byol.evaluate.rankme)."""

import math

import pytest
import torch

from byol.errors import DataError
from byol.evaluate import rankme


def _with_singular_values(values, n=50, d=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(n, d, generator=generator, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=torch.float64))
    s = torch.zeros(d, dtype=torch.float64)
    s[: len(values)] = torch.tensor(values, dtype=torch.float64)
    return u @ torch.diag(s) @ v.T


def test_rankme_equals_the_hand_computed_value():
    features = _with_singular_values([3.0, 1.0])
    # p = (0.75, 0.25) (+ eps on each of the 8 values): exp(-(0.75 ln 0.75 + 0.25 ln 0.25)).
    expected = math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert rankme(features) == pytest.approx(expected, rel=1e-4)
    assert rankme(_with_singular_values([2.0] * 8)) == pytest.approx(8.0, rel=1e-5)
    assert rankme(_with_singular_values([5.0])) == pytest.approx(1.0, abs=1e-4)


def test_rankme_is_invariant_to_feature_scale():
    features = torch.randn(200, 16, generator=torch.Generator().manual_seed(1))
    value = rankme(features)
    assert 1.0 < value <= 16.0
    for scale in (1e-3, 7.0, 1e4):
        assert rankme(features * scale) == pytest.approx(value, rel=1e-6)


def test_rankme_refuses_a_single_row():
    with pytest.raises(DataError, match="rankme needs"):
        rankme(torch.zeros(1, 4))
