"""Token sampling knobs, checked against hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from biozoo.errors import BiozooError, InvalidArgumentError
from biozoo.nn.sampling import check_sampling, filter_logits, sample_logits

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


def test_sync_free_draws_follow_the_same_distribution() -> None:
    """The exponential race (no GPU wait) samples the multinomial's distribution, respects top-k, is seeded."""
    logits = LOGITS.expand(8000, 4)

    def draws(seed: int, **kw) -> torch.Tensor:
        return sample_logits(logits, generator=torch.Generator().manual_seed(seed), sync_free=True, **kw)

    assert torch.equal(draws(1), draws(1)) and not torch.equal(draws(1), draws(2))
    freq = torch.bincount(draws(2), minlength=4).float() / 8000
    torch.testing.assert_close(freq, torch.tensor([0.5, 0.3, 0.15, 0.05]), atol=0.02, rtol=0)
    assert set(draws(3, top_k=2).tolist()) == {0, 1}
    assert sample_logits(LOGITS, temperature=0, sync_free=True).tolist() == [0]


def test_bad_settings_are_refused() -> None:
    for kwargs in ({"temperature": -1}, {"top_k": 0}, {"top_p": 0.0}, {"top_p": 1.2}):
        with pytest.raises(ValueError):
            sample_logits(LOGITS, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "flag"),
    [
        ({"temperature": float("nan")}, "--temperature"),
        ({"temperature": float("inf")}, "--temperature"),
        ({"temperature": -1}, "--temperature"),
        ({"top_p": 2.0}, "--top-p"),
        ({"top_p": 0.0}, "--top-p"),
        ({"top_p": float("nan")}, "--top-p"),
        ({"top_k": 0}, "--top-k"),
        ({"top_k": -1}, "--top-k"),
        ({"n": 0}, "-n N"),
        ({"n": -3}, "-n N"),
    ],
)
def test_bad_settings_are_biozoo_errors_naming_the_flag(kwargs: dict, flag: str) -> None:
    """Both a BiozooError (the CLI prints error:/hint:, no traceback) and a ValueError (Python callers)."""
    settings = {"temperature": 1.0, "top_k": None, "top_p": None, **kwargs}
    with pytest.raises(InvalidArgumentError) as info:
        check_sampling(settings.pop("temperature"), settings.pop("top_k"), settings.pop("top_p"), **settings)
    assert isinstance(info.value, BiozooError) and isinstance(info.value, ValueError)
    assert flag in info.value.hint and "in Python" in info.value.hint


def test_good_settings_pass() -> None:
    check_sampling(0, 1, 1.0, n=1)
    check_sampling(0.7, None, 0.9)
