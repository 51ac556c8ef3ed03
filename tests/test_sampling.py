"""Token sampling knobs, checked against hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from biozoo.nn.sampling import filter_logits, sample_logits

LOGITS = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))


def test_top_k_keeps_the_k_largest() -> None:
    kept = torch.isfinite(filter_logits(LOGITS, top_k=2))
    assert kept.tolist() == [[True, True, False, False]]


@pytest.mark.parametrize(("top_p", "expected"), [(0.5, 1), (0.6, 2), (0.8, 2), (0.81, 3), (1.0, 4), (0.01, 1)])
def test_top_p_keeps_the_smallest_set_reaching_p(top_p: float, expected: int) -> None:
    kept = torch.isfinite(filter_logits(LOGITS, top_p=top_p))
    assert int(kept.sum()) == expected and kept[0, :expected].all()


def test_greedy_seeded_and_temperature() -> None:
    assert sample_logits(LOGITS, temperature=0).tolist() == [0]
    draws = lambda seed: sample_logits(LOGITS.expand(4000, 4), generator=torch.Generator().manual_seed(seed))  # noqa: E731
    assert torch.equal(draws(1), draws(1))
    freq = torch.bincount(draws(2), minlength=4).float() / 4000
    torch.testing.assert_close(freq, torch.tensor([0.5, 0.3, 0.15, 0.05]), atol=0.03, rtol=0)
    hot = sample_logits(LOGITS.expand(4000, 4), temperature=1e6, generator=torch.Generator().manual_seed(3))
    assert math.isclose(float((hot == 3).float().mean()), 0.25, abs_tol=0.03)


def test_bad_settings_are_refused() -> None:
    for kwargs in ({"temperature": -1}, {"top_k": 0}, {"top_p": 0.0}, {"top_p": 1.2}):
        with pytest.raises(ValueError):
            sample_logits(LOGITS, **kwargs)
