"""Experience replay of past fakes: capacity, mixing share, exact resume."""
from __future__ import annotations

import pytest
import torch

from trainables.gan.replay import ReplayBuffer


def _batch(start: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose every pixel holds their serial number, so they can be told apart."""
    ids = torch.arange(start, start + n, dtype=torch.float32)
    return ids.view(n, 1, 1, 1).expand(n, 1, 4, 4).clone(), torch.arange(start, start + n) % 2


def _ids(images: torch.Tensor) -> list[int]:
    return images[:, 0, 0, 0].long().tolist()


def test_capacity_is_respected_and_the_newest_fakes_are_kept():
    buffer = ReplayBuffer(10)
    for start in range(0, 25, 5):
        buffer.push(*_batch(start, 5))
    assert len(buffer) == 10
    images, labels = buffer.sample(10, torch.Generator().manual_seed(0))
    assert sorted(_ids(images)) == list(range(15, 25))
    assert labels.tolist() == [i % 2 for i in _ids(images)]  # labels stay with their images


def test_a_batch_larger_than_the_capacity_keeps_its_last_images():
    buffer = ReplayBuffer(4)
    buffer.push(*_batch(0, 9))
    assert len(buffer) == 4
    assert sorted(_ids(buffer.sample(4)[0])) == [5, 6, 7, 8]


def test_pushed_fakes_are_detached():
    buffer = ReplayBuffer(4)
    images = _batch(0, 2)[0].requires_grad_(True)
    buffer.push(images * 1.0, torch.tensor([0, 1]))
    assert not buffer.sample(2)[0].requires_grad


@pytest.mark.parametrize(("ratio", "replaced"), [(0.0, 0), (0.25, 4), (0.5, 8), (1.0, 16)])
def test_mix_replaces_the_requested_share_of_the_batch(ratio, replaced):
    buffer = ReplayBuffer(100)
    buffer.push(*_batch(1000, 50))
    fakes, labels = _batch(0, 16)
    mixed, mixed_labels = buffer.mix(fakes, labels, ratio, torch.Generator().manual_seed(0))
    assert mixed.shape == fakes.shape and mixed_labels.shape == labels.shape
    ids = _ids(mixed)
    assert sum(i >= 1000 for i in ids) == replaced
    assert ids[replaced:] == list(range(replaced, 16))  # the rest of the current batch, unchanged
    assert mixed_labels.tolist() == [i % 2 for i in ids]


def test_mix_replaces_no_more_than_the_buffer_holds():
    buffer = ReplayBuffer(100)
    buffer.push(*_batch(1000, 3))
    mixed, _ = buffer.mix(*_batch(0, 16), ratio=0.5)
    assert sum(i >= 1000 for i in _ids(mixed)) == 3


def test_a_zero_capacity_buffer_is_off():
    buffer = ReplayBuffer(0)
    buffer.push(*_batch(0, 8))
    fakes, labels = _batch(100, 8)
    mixed, mixed_labels = buffer.mix(fakes, labels, 0.5)
    assert len(buffer) == 0 and torch.equal(mixed, fakes) and torch.equal(mixed_labels, labels)


def test_state_round_trip_gives_identical_samples_afterwards():
    original = ReplayBuffer(12)
    for start in range(0, 20, 4):  # wraps the ring
        original.push(*_batch(start, 4))
    restored = ReplayBuffer(12)
    restored.load_state_dict(original.state_dict())

    rng_a, rng_b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for step in range(3):  # keep pushing too: the ring position must survive
        batch = _batch(100 + 4 * step, 4)
        original.push(*batch)
        restored.push(*batch)
        a = original.mix(*_batch(0, 8), ratio=0.5, generator=rng_a)
        b = restored.mix(*_batch(0, 8), ratio=0.5, generator=rng_b)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert torch.equal(original.sample(12, rng_a)[0], restored.sample(12, rng_b)[0])


def test_state_of_an_empty_buffer_round_trips():
    restored = ReplayBuffer(5)
    restored.load_state_dict(ReplayBuffer(5).state_dict())
    assert len(restored) == 0


def test_loading_a_state_of_another_capacity_says_what_to_do():
    state = ReplayBuffer(8).state_dict()
    with pytest.raises(ValueError, match="same replay_size"):
        ReplayBuffer(4).load_state_dict(state)


def test_sampling_an_empty_buffer_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(4).sample(1)
