"""Stage 3's cost per classifier: one training step on one CPU thread, as a stage-3 trial runs it.

    python -m bench.classifier_step [--quick]

For each registered classifier at the laptop preset's size (32 px, batch 32): the seconds of a
training step (forward, backward, fused AdamW) as `trainables.classify` builds and trains it,
after one warm-up step. The baselines, in the same run: VGG-16 as timm builds it (its head a 7x7
and a 1x1 convolution, each over an input of exactly its kernel's size) with a plain AdamW,
which is what stage 3 ran before its head was computed as the matrix products it is; and each
classifier that stage 3 builds in channels-last layout, in the default (contiguous) layout.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from bench.common import Section
from trainables.classify.models import CLASSIFIER_REGISTRY, _timm, build_classifier

SIZE, BATCH = 32, 32


def step_seconds(model: torch.nn.Module, optimizer: torch.optim.Optimizer, steps: int) -> float:
    """Mean seconds of a training step over `steps`, after one warm-up step."""
    x, y = torch.rand(BATCH, 1, SIZE, SIZE), torch.arange(BATCH) % 2
    model.train()
    times = []
    for _ in range(steps + 1):
        started = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - started)
    return sum(times[1:]) / steps


def measure(quick: bool = False) -> Section:
    steps = 1 if quick else 3
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a packed stage-3 trial's share of the machine
    try:
        timm_vgg = _timm("vgg16", "")
        baseline = step_seconds(timm_vgg, torch.optim.AdamW(timm_vgg.parameters(), lr=1e-3), steps)
        rows = [{"classifier": "vgg16 as timm builds it, plain AdamW (baseline)", "s per step": baseline}]
        ours, ratios = {}, {}
        for name in CLASSIFIER_REGISTRY:
            model = build_classifier(name).model
            ours[name] = fused_step_seconds(model, steps)
            rows.append({"classifier": name, "s per step": ours[name]})
            strides = [p.stride() for p in model.parameters()]
            model = model.to(memory_format=torch.contiguous_format)
            if strides != [p.stride() for p in model.parameters()]:  # stage 3 builds it channels-last
                contiguous = fused_step_seconds(model, steps)
                rows.append({"classifier": f"{name} in the contiguous layout (baseline)", "s per step": contiguous})
                ratios[f"{name} step, contiguous / channels-last"] = contiguous / ours[name]
    finally:
        torch.set_num_threads(threads)
    return Section(
        title="Stage 3: a classifier training step on one CPU thread",
        method=(f"{SIZE} px, batch {BATCH}, forward + backward + AdamW, mean of {steps} step(s) after a warm-up, "
                "one torch thread; each classifier as stage 3 builds it (fused AdamW). Baselines: timm's VGG-16 "
                "as built, with a plain AdamW; each classifier built channels-last, in the contiguous layout."),
        rows=rows, ratios={"vgg16 step, baseline / ours": baseline / ours["vgg16"], **ratios})


def fused_step_seconds(model: torch.nn.Module, steps: int) -> float:
    return step_seconds(model, torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True), steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    print(measure(parser.parse_args().quick).markdown())


if __name__ == "__main__":
    main()
