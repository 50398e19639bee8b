"""Calibration of stage 3's statistics: error rates, coverage and power, by simulation.

    python -m bench.calibration [--quick]

A generative model of a stage-3 table, independent of the statistics it checks: test patients
(half malignant) with a few slices each and a patient effect that every classifier run shares;
for each arm and seed, the arm's label signal shifted by a seed effect (training randomness that
moves the whole run) plus a patient x seed x arm term (the patients a run happens to get right)
and slice noise; scores are the logistic of that. `orchestrator.statistics.utility` is called on
it as stage 3 calls it. Under the null two arms have the same signal; a planted effect raises the
second arm's. The figures: how often a null comparison comes out at p < 0.05 (and how often a
family of null arms makes a false claim after Holm), how often the Δ AUC interval covers the
truth, and how often a planted effect is found.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.stats

from orchestrator.statistics import utility

ALPHA = 0.05


@dataclass(frozen=True)
class Scenario:
    seeds: int
    seed_sd: float = 0.3  # the seed effect on the label signal (logit scale)
    interaction_sd: float = 0.7  # patient x seed x arm
    effect: float = 0.0  # added to the second arm's label signal
    null_arms: int = 1  # arms compared with real only (all but the second carry no effect)
    patients: int = 60
    slices: int = 3
    signal: float = 1.0

    def describe(self) -> str:
        return (f"{self.seeds} seed(s), seed effect sd {self.seed_sd}, patient x seed x arm sd {self.interaction_sd}"
                + (f", planted effect {self.effect}" if self.effect else "")
                + (f", {self.null_arms} arms" if self.null_arms > 1 else ""))


def simulated_table(scenario: Scenario, rng: np.random.Generator) -> pd.DataFrame:
    """One simulated stage-3 table (one classifier): real only and the scenario's arms x seeds."""
    labels = np.repeat(rng.permutation(np.arange(scenario.patients) % 2), scenario.slices)
    patients = np.repeat(np.arange(scenario.patients), scenario.slices)
    patient_effect = rng.normal(0, 1, scenario.patients)[patients]
    arms = {"real": scenario.signal, "synthetic:a:1": scenario.signal + scenario.effect}
    arms.update({f"synthetic:null{i}:1": scenario.signal for i in range(1, scenario.null_arms)})
    rows = []
    for arm_id, signal in arms.items():
        for seed in range(scenario.seeds):
            run_signal = signal + rng.normal(0, scenario.seed_sd)
            run_effect = rng.normal(0, scenario.interaction_sd, scenario.patients)[patients]
            logit = run_signal * (2 * labels - 1) + patient_effect + run_effect + rng.normal(0, 1, len(labels))
            rows.append({"classifier": "resnet", "arm_id": arm_id, "seed": seed, "threshold": 0.5,
                         "test_scores": 1 / (1 + np.exp(-logit)), "test_labels": labels, "test_patients": patients,
                         "degenerate": ""})
    return pd.DataFrame(rows)


def true_delta_auc(scenario: Scenario) -> float:
    """The planted arm's expected Δ AUC over training runs (0 under the null), in closed form.

    A malignant and a benign slice always come from two patients, so their logit difference is
    2 x signal plus normal noise of variance 2 (1 + interaction_sd^2 + 1) (patient effect, patient x
    seed x arm term, slice noise): AUC = Phi(2 signal / tau). Over the seed effect's normal spread
    of the signal, its expectation is Phi(2 signal / sqrt(tau^2 + 4 seed_sd^2)).
    """
    tau2 = 2 * (2 + scenario.interaction_sd**2)
    expected = [scipy.stats.norm.cdf(2 * signal / math.sqrt(tau2 + 4 * scenario.seed_sd**2))
                for signal in (scenario.signal, scenario.signal + scenario.effect)]
    return float(expected[1] - expected[0])


@dataclass(frozen=True)
class Rates:
    splits: int
    rejected: float  # the planted (or null) arm at p < 0.05
    covered: float  # its Δ AUC interval holds the truth
    family_error: float  # any arm of the family claimed after Holm
    claims: int  # splits where the arm carried a p-value at all

    def mc_error(self, rate: float) -> float:
        """The Monte-Carlo standard error of a rate near `rate` over these splits."""
        return math.sqrt(rate * (1 - rate) / self.splits)


def rates(scenario: Scenario, splits: int, draws: int = 500, seed: int = 0) -> Rates:
    rng = np.random.default_rng(seed)
    truth = true_delta_auc(scenario)
    rejected = covered = family = claims = 0
    for i in range(splits):
        summary = utility(simulated_table(scenario, rng), min_patients_per_label=10, draws=draws, seed=i)
        arm = next(a for a in summary.arms if a.arm_id == "synthetic:a:1")
        delta = arm.deltas["roc_auc"]
        if math.isnan(delta.p):
            continue
        claims += 1
        rejected += delta.p < ALPHA
        covered += delta.low <= truth <= delta.high
        family += any(a.holm_p < ALPHA for a in summary.arms if not math.isnan(a.holm_p))
    n = max(claims, 1)
    return Rates(splits, rejected / n, covered / n, family / n, claims)


SCENARIOS = [Scenario(seeds, seed_sd) for seeds in (2, 3, 5, 10) for seed_sd in (0.0, 0.3)]


def table(splits: int, draws: int) -> str:
    lines = ["| seeds | seed effect sd | false positives (p < 0.05) | Δ AUC interval covers 0 | "
             "power, planted Δ (signal +0.6) | family of 3 null arms, any Holm claim |", "|---|---|---|---|---|---|"]
    for s in SCENARIOS:
        null = rates(s, splits, draws)
        planted = rates(Scenario(s.seeds, s.seed_sd, effect=0.6), splits, draws)
        family = rates(Scenario(s.seeds, s.seed_sd, null_arms=3), splits, draws) if s.seeds == 3 else None
        lines.append(f"| {s.seeds} | {s.seed_sd} | {null.rejected:.3f} | {null.covered:.3f} | {planted.rejected:.3f} | "
                     + (f"{family.family_error:.3f} |" if family else " |"))
        print(lines[-1], flush=True)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    splits = 60 if args.quick else 400
    print(f"{splits} simulated splits per row; 60 test patients x 3 slices; patient x seed x arm sd 0.7; "
          "500 bootstrap draws")
    print(table(splits, 500))


if __name__ == "__main__":
    main()
