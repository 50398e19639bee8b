"""Experience replay of past fakes for the critic (the field report's option; SimGAN-style).

The critic sees, in each fake batch, a `replay_ratio` share of fakes from earlier generator
steps, so it keeps penalising modes the generator has just left and the two oscillate less.

    buffer = ReplayBuffer(cfg["replay_size"])           # 0 turns replay off
    fake_for_critic, fake_labels = buffer.mix(fake, labels, cfg["replay_ratio"], rng)
    buffer.push(fake, labels)                            # after mixing: never replay a batch into itself

The buffer is a ring: it keeps the newest `capacity` fakes. `state_dict()` holds everything
it knows (the random draws come from the caller's torch.Generator, checkpointed with the
rest), so a resumed run draws exactly what the uninterrupted one would.
"""
from __future__ import annotations

import torch


class ReplayBuffer:
    """Ring buffer of detached fakes [capacity, C, H, W] with their int64 labels [capacity].

    Stored on `device` (CPU by default: 1000 fakes at 256 px are 256 MB) in the dtype of
    the first batch pushed. capacity 0 is a disabled buffer: push does nothing, mix returns
    its input.
    """

    def __init__(self, capacity: int, device: str | torch.device = "cpu"):
        if capacity < 0:
            raise ValueError(f"replay_size must be >= 0, got {capacity}")
        self.capacity = int(capacity)
        self.device = torch.device(device)
        self._images: torch.Tensor | None = None
        self._labels: torch.Tensor | None = None
        self._size = 0  # filled slots
        self._next = 0  # slot the next image goes to

    def __len__(self) -> int:
        return self._size

    def push(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """Store a batch (detached); once full, the oldest entries are overwritten."""
        if self.capacity == 0:
            return
        images = images.detach()[-self.capacity :].to(self.device)
        labels = labels.detach()[-self.capacity :].to(self.device, torch.int64)
        if self._images is None:
            self._images = torch.empty((self.capacity, *images.shape[1:]), dtype=images.dtype, device=self.device)
            self._labels = torch.empty(self.capacity, dtype=torch.int64, device=self.device)
        slots = (self._next + torch.arange(images.shape[0], device=self.device)) % self.capacity
        self._images[slots] = images.to(self._images.dtype)
        self._labels[slots] = labels
        self._next = (self._next + images.shape[0]) % self.capacity
        self._size = min(self._size + images.shape[0], self.capacity)

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """n stored fakes and their labels, drawn uniformly; without replacement when n <= len."""
        if self._size == 0:
            raise ValueError("ReplayBuffer.sample: the buffer is empty (push fakes first)")
        rng_device = generator.device if generator is not None else torch.device("cpu")
        if n <= self._size:
            idx = torch.randperm(self._size, generator=generator, device=rng_device)[:n]
        else:
            idx = torch.randint(self._size, (n,), generator=generator, device=rng_device)
        idx = idx.to(self.device)
        return self._images[idx], self._labels[idx]

    def mix(
        self, fakes: torch.Tensor, labels: torch.Tensor, ratio: float, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Replace the first round(ratio * B) fakes (and their labels) with replayed ones.

        Fewer are replaced while the buffer holds fewer; the batch size never changes.
        The result is detached: it is for the critic step only.
        """
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"replay_ratio must be in [0, 1], got {ratio}")
        fakes = fakes.detach()
        k = min(round(ratio * fakes.shape[0]), self._size)
        if k == 0:
            return fakes, labels
        old_images, old_labels = self.sample(k, generator)
        old_images = old_images.to(fakes.device, fakes.dtype)
        old_labels = old_labels.to(labels.device, labels.dtype)
        return torch.cat([old_images, fakes[k:]]), torch.cat([old_labels, labels[k:]])

    def state_dict(self) -> dict:
        """Everything needed to continue exactly: the filled slots, in slot order, and the ring position."""
        filled = self._images[: self._size].clone() if self._images is not None else None
        labels = self._labels[: self._size].clone() if self._labels is not None else None
        return {"capacity": self.capacity, "images": filled, "labels": labels, "next": self._next}

    def load_state_dict(self, state: dict) -> None:
        if state["capacity"] != self.capacity:
            raise ValueError(
                f"replay buffer checkpoint holds capacity {state['capacity']}, this run has replay_size "
                f"{self.capacity}: resume with the same replay_size"
            )
        self._images = self._labels = None
        self._size, self._next = 0, int(state["next"])
        if state["images"] is None:
            return
        images = state["images"].to(self.device)
        self._images = torch.empty((self.capacity, *images.shape[1:]), dtype=images.dtype, device=self.device)
        self._labels = torch.empty(self.capacity, dtype=torch.int64, device=self.device)
        self._size = images.shape[0]
        self._images[: self._size] = images
        self._labels[: self._size] = state["labels"].to(self.device)
