"""The GPU benchmark is one prepared script for scarce GPU time: its every part runs here, on the CPU,
so that the GPU run measures rather than debugs."""
from __future__ import annotations

import pytest
import torch

from bench import gpu


@pytest.mark.slow
def test_every_part_of_the_gpu_benchmark_runs_on_the_cpu():
    section = gpu.measure_on("cpu", gpu.CPU_SCALE)
    tables = list(section.tables.values())
    assert [heading[:2] for heading in section.tables] == ["a.", "b.", "c.", "d."]

    steps, (trial,), packing, one_trial = tables
    settings = {(row["precision"], row["layout"], row["compile"]) for row in steps}
    assert settings == {("fp32", "contiguous", ""), ("fp32", "channels_last", ""), ("bf16", "contiguous", ""),
                        ("bf16", "channels_last", "")}  # the compiled row is the GPU run's (CPU_SCALE)
    assert all(row["images / s"] > 0 for row in steps) and steps[0]["/ fp32 contiguous"] == 1
    assert trial["trial device"] == "cpu" and trial["images / s"] > 0
    assert trial["GPU use over the trial %"] == "no samples"  # no nvidia-smi here: said, not made up
    assert [row["trials at a time"] for row in packing] == ["1 per CPU", "2 per CPU"]
    assert all(row["wall s"] > 0 for row in packing + one_trial)
    assert len(section.ratios) == 4 and all(value > 0 for value in section.ratios.values())
    assert "c. 2 resnet trials at 32 px, packed:" in section.markdown()


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the suite measures")
def test_the_suite_says_the_gpu_figures_were_not_measured_without_a_gpu():
    section = gpu.measure(quick=True)
    assert section.notes == ["not measured: this machine has no CUDA GPU"] and not section.tables
