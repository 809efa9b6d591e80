from __future__ import annotations

import pytest
import torch

from lesionseg.metrics import ConfusionStats, get_stats

# 4x4 example used across the metric tests.
#   pred          target
#   1 1 0 0       1 1 1 0
#   1 1 0 0       1 0 0 0
#   0 0 0 0       0 0 0 0
#   0 0 0 1       0 0 0 0
# tp: (0,0) (0,1) (1,0)            -> 3
# fp: (1,1) (3,3)                  -> 2
# fn: (0,2)                        -> 1
# tn: 16 - 3 - 2 - 1               -> 10
PRED = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]])
TARGET = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])


@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.int64, torch.float32])
def test_hand_counted_4x4(dtype: torch.dtype) -> None:
    stats = get_stats(PRED[None, None].to(dtype), TARGET[None, None].to(dtype))
    assert [s.tolist() for s in stats.as_tuple()] == [[3], [2], [1], [10]]
    assert all(s.dtype == torch.int64 for s in stats.as_tuple())


def test_three_dim_input_and_batch() -> None:
    pred = torch.stack([PRED, torch.zeros_like(PRED)])
    target = torch.stack([TARGET, TARGET])
    stats = get_stats(pred, target)
    assert stats.tp.tolist() == [3, 0]
    assert stats.fp.tolist() == [2, 0]
    assert stats.fn.tolist() == [1, 4]
    assert stats.tn.tolist() == [10, 12]


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="does not match"):
        get_stats(PRED[None, None], TARGET[None])


def test_multichannel_and_non_binary_raise() -> None:
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        get_stats(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match="only 0 and 1"):
        get_stats(torch.full((1, 1, 4, 4), 0.7), torch.zeros(1, 1, 4, 4))


def test_add_and_cat() -> None:
    a = get_stats(PRED[None], TARGET[None])
    b = get_stats(torch.zeros(1, 4, 4), TARGET[None])
    summed = a + b
    assert summed.tp.tolist() == [3] and summed.fn.tolist() == [5] and summed.tn.tolist() == [22]
    joined = ConfusionStats.cat([a, b])
    assert len(joined) == 2 and joined.fn.tolist() == [1, 4]
    assert joined.total().tn.tolist() == [22]
    assert len(ConfusionStats.cat([])) == 0
    with pytest.raises(ValueError, match="cannot add"):
        _ = joined + a
