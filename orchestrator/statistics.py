"""What a stage-3 figure rests on: patients, seeds, and the comparisons a sweep makes.

Slices of one patient are not independent cases, so every interval and p-value here comes
from a **patient-level (cluster) bootstrap** of the test split: each draw resamples the test
patients with replacement (all of a patient's slices go together), and a metric is recomputed
on the drawn patients for every seed and averaged over seeds.

A seed mean varies for two reasons: which test patients were drawn (shared by every seed) and
which training run each seed gave (the seed effect plus a patient x seed part, different for
every seed). The bootstrap carries only the shared part, estimated as the draws' covariance
between seeds; the whole seed-to-seed spread of the S seeds on the test split goes into a
Student t term with S - 1 degrees of freedom (`Resampling.combine`). That keeps the level at
2-10 seeds whatever the seed effect (a variance from 2 or 3 seeds is itself uncertain, and the t
term's tails say so); the calibration is checked by simulation (`bench/calibration.py`). One
seed cannot show how much a second training run would differ: it gives figures, never an
interval, p-value or conclusion. A paired difference (an arm minus real-only, same classifier)
is taken seed by seed on the same drawn patients, so it keeps the pairing that makes it sensitive.

Estimates are the seed mean of each metric on the whole test split; intervals are the
percentile interval of the draws; a two-sided p-value is twice the smaller tail share of the
draws beyond zero, (k + 1) / (B + 1) so that it is never 0. The family of a sweep's
comparisons is corrected with Holm's step-down method.

A patient is one unit wherever patients are counted or resampled, whatever labels its slices
carry. Degenerate classifiers (constant scores, chance-level validation: `degenerate_reason` in
`trainables.metrics`, which the training loop applies too) carry figures but no p-value and
are left out of the family; a test split with too few patients per label carries figures
only (`inference_blocker`).
"""
from __future__ import annotations

import dataclasses
import math
import zlib
from dataclasses import dataclass, field

import numpy as np
import scipy.stats

from trainables.classify.arms import Arm
from trainables.metrics import degenerate_reason

# Enough draws for Holm over a sweep's family: a bootstrap p is at least 2 / (draws + 1), so with 2,000
# draws a family of 20 comparisons (the laptop's) could adjust no p below 0.02, and a p of 3 in 2,000
# draws already missed 0.05; 10,000 take about 6 s for the laptop's 90 trials
DRAWS = 10_000
CONFIDENCE = 0.95
ALPHA = 0.05  # a comparison is claimed only when its Holm-adjusted p is below this
METRICS = ("roc_auc", "accuracy", "sensitivity", "specificity")
RESAMPLED = ("test patients resampled with replacement (cluster bootstrap, {draws} draws, seeded) for what all "
             "seeds share, plus the whole seed-to-seed spread as a Student t term with seeds - 1 degrees of "
             "freedom; differences paired by classifier, seed and drawn patients")
ONE_SEED = ("one seed shows neither how much another training run would differ nor whether a difference is more "
            "than that: figures only, no intervals, p-values or conclusions (train 2 or more seeds; 5 give "
            "much tighter intervals than 2)")


@dataclass(frozen=True)
class Cases:
    """The real test slices every arm is scored on: label and patient (an integer code) per slice."""
    labels: np.ndarray  # [n] 0 / 1
    patients: np.ndarray  # [n] patient code

    @classmethod
    def of(cls, labels, patients) -> Cases:
        labels, patients = np.asarray(labels, np.int64), np.asarray(patients)
        if labels.shape != patients.shape:
            raise ValueError(f"{len(labels)} test labels but {len(patients)} patient codes: need one per slice")
        return cls(labels, np.unique(patients, return_inverse=True)[1].reshape(-1))

    @property
    def n_patients(self) -> int:
        return int(self.patients.max()) + 1 if len(self.patients) else 0

    def patients_per_label(self) -> dict[int, int]:
        """Patients with at least one slice of each label (a patient with both counts under both:
        what the per-label minimum of `inference_blocker` asks for)."""
        return {label: len(np.unique(self.patients[self.labels == label])) for label in (0, 1)}

    def patient_groups(self) -> dict[str, int]:
        """Each patient once: benign slices only, malignant only, or both (the groups sum to the patients)."""
        per_patient = np.zeros((self.n_patients, 2), bool)
        per_patient[self.patients, self.labels] = True
        return {"benign": int((per_patient[:, 0] & ~per_patient[:, 1]).sum()),
                "malignant": int((per_patient[:, 1] & ~per_patient[:, 0]).sum()),
                "both": int(per_patient.all(1).sum())}

    def describe(self) -> str:
        groups = self.patient_groups()
        both = f", {groups['both']} with slices of both labels" if groups["both"] else ""
        return (f"{self.n_patients} test patients ({groups['benign']} benign, {groups['malignant']} malignant{both}), "
                f"{len(self.labels)} slices")


def inference_blocker(cases: Cases, min_patients_per_label: int) -> str:
    """Why this test split carries no inferential claim ('' when it can)."""
    per = cases.patients_per_label()
    if min(per.values()) < min_patients_per_label:
        return (f"the test split has {per[0]} benign and {per[1]} malignant patients, fewer than "
                f"{min_patients_per_label} per label (classify.min_test_patients_per_label): figures only, no "
                "intervals, p-values or conclusions")
    return ""


# --- Metrics of one seed on weighted patients ------------------------------------------------------

def patient_weights(n_patients: int, draws: int, rng: np.random.Generator) -> np.ndarray:
    """[draws, P] how often each patient is drawn when P patients are resampled with replacement."""
    return rng.multinomial(n_patients, np.full(n_patients, 1.0 / n_patients), size=draws).astype(np.float64)


def weighted_metrics(cases: Cases, scores: np.ndarray, threshold: float, weights: np.ndarray) -> dict:
    """Each metric of one seed's test scores, for each row of patient `weights` [B, P]: {metric: [B]}.

    Everything is summed per patient first (counts, and the Mann-Whitney kernel between one
    patient's positive slices and another's negative slices), so a draw costs P x P, not n x n.
    """
    scores = np.asarray(scores, np.float64)
    one_hot = np.zeros((len(scores), cases.n_patients))
    one_hot[np.arange(len(scores)), cases.patients] = 1.0
    pos, neg = cases.labels == 1, cases.labels == 0
    predicted = scores >= threshold
    per_patient = {name: mask.astype(np.float64) @ one_hot for name, mask in {
        "pos": pos, "neg": neg, "tp": pos & predicted, "tn": neg & ~predicted}.items()}
    # psi(x, y) = 1 if x > y, 1/2 if equal, over positive x and negative y, summed per patient pair
    psi = (scores[pos, None] > scores[None, neg]) + 0.5 * (scores[pos, None] == scores[None, neg])
    kernel = one_hot[pos].T @ psi @ one_hot[neg]
    with np.errstate(invalid="ignore", divide="ignore"):
        n_pos, n_neg = weights @ per_patient["pos"], weights @ per_patient["neg"]
        tp, tn = weights @ per_patient["tp"], weights @ per_patient["tn"]
        return {"roc_auc": np.einsum("bp,pq,bq->b", weights, kernel, weights) / (n_pos * n_neg),
                "accuracy": (tp + tn) / (n_pos + n_neg), "sensitivity": tp / n_pos, "specificity": tn / n_neg}


# --- Arms and paired differences --------------------------------------------------------------------

@dataclass(frozen=True)
class Spread:
    """Where the variance of a seed mean comes from, split by what would shrink it."""
    patients: float  # shrinks with more test patients: the bootstrap variance of the seed mean
    seeds: float  # does not: the seed-to-seed variance beyond each seed's patient x seed part, / S
    standard_error: float  # of the seed mean: what all seeds share plus the between-seed variance / S


@dataclass(frozen=True)
class Estimate:
    value: float  # seed mean on the whole test split
    low: float
    high: float
    p: float  # two-sided, against 0 (a difference); nan for an arm's own metric
    draws: np.ndarray | None = field(default=None, repr=False, compare=False)  # [B] combined draws
    spread: Spread | None = field(default=None, repr=False, compare=False)

    def interval(self) -> str:
        if math.isnan(self.low):
            return f"{self.value:.3f}" if not math.isnan(self.value) else "n/a"
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


@dataclass(frozen=True)
class Resampling:
    """One set of draws shared by every arm of a sweep: the pairing of differences rests on it."""
    weights: np.ndarray  # [B, P] patient counts per draw
    seed_t: np.ndarray  # [B] Student t draws (S - 1 degrees of freedom) for the seed term
    n_seeds: int

    @classmethod
    def draw(cls, cases: Cases, n_seeds: int, draws: int = DRAWS, seed: int = 0, stream: int = 0) -> Resampling:
        """The patient draws depend on `seed` alone (every arm is paired on them); the seed term's on
        `stream` too, so that arms trained independently get independent seed terms."""
        weights = patient_weights(cases.n_patients, draws, np.random.default_rng(seed))
        seed_t = np.random.default_rng([seed, stream]).standard_t(max(1, n_seeds - 1), draws)
        return cls(weights, seed_t, n_seeds)

    def combine(self, point: np.ndarray, per_seed: np.ndarray) -> np.ndarray:
        """[B] draws of the seed mean from its patient-bootstrap draws `per_seed` [B, S] and the S
        seeds' `point` values [S] on the whole split.

        The draws' covariance between two seeds is the variance all seeds share (which patients
        were drawn); the draws are shrunk about their centre to carry that alone. The seed-to-seed
        spread of `point` holds everything else (the seed effect and each seed's patient x seed
        part): it enters whole, as var / S times a Student t with S - 1 degrees of freedom, so
        nothing is counted twice and nothing is taken off an estimate that rests on S - 1 degrees
        of freedom (taking off and clipping at zero made the intervals too short at 2-5 seeds).
        """
        n_seeds = per_seed.shape[1]
        if n_seeds != self.n_seeds:
            raise ValueError(f"these draws were made for {self.n_seeds} seeds, not {n_seeds}")
        if n_seeds < 2:
            raise ValueError(f"seed variation needs 2 or more seeds, got {n_seeds}: {ONE_SEED}")
        return self.shared(per_seed) + self.seed_t * math.sqrt(float(np.var(point, ddof=1)) / n_seeds)

    @staticmethod
    def shared(per_seed: np.ndarray) -> np.ndarray:
        """[B] the draws of the seed mean, shrunk about their centre to the variance all seeds share."""
        mean = np.nanmean(per_seed, axis=1)
        var_mean = float(np.nanvar(mean))
        if var_mean == 0:
            return mean
        centre = float(np.nanmean(mean))
        return centre + (mean - centre) * math.sqrt(bootstrap_variances(per_seed)[1] / var_mean)


def bootstrap_variances(per_seed: np.ndarray) -> tuple[float, float]:
    """(a single seed's bootstrap variance, the part all seeds share) of draws `per_seed` [B, S]: the
    latter is the mean covariance between two seeds' draws, (S var(mean) - mean var(seed)) / (S - 1)."""
    n_seeds = per_seed.shape[1]
    single = float(np.nanmean(np.nanvar(per_seed, axis=0)))
    var_mean = float(np.nanvar(np.nanmean(per_seed, axis=1)))
    return single, max(0.0, (n_seeds * var_mean - single) / (n_seeds - 1))


def seed_parts(point: np.ndarray, per_seed: np.ndarray) -> tuple[float, float]:
    """(between-seed variance of `point` [S], the part of it each seed's patient x seed term explains):
    the latter is a single seed's bootstrap variance minus the variance all seeds share."""
    single, shared = bootstrap_variances(per_seed)
    return float(np.var(point, ddof=1)), max(0.0, single - shared)


def spread(point: np.ndarray, per_seed: np.ndarray) -> Spread:
    between, explained = seed_parts(point, per_seed)
    n_seeds = per_seed.shape[1]
    shared = float(np.nanvar(Resampling.shared(per_seed)))
    return Spread(float(np.nanvar(np.nanmean(per_seed, axis=1))), max(0.0, between - explained) / n_seeds,
                  math.sqrt(shared + between / n_seeds))


def metric_draws(cases: Cases, scores: np.ndarray, thresholds: np.ndarray, resampling: Resampling) -> dict:
    """{metric: [B, S]} for one arm's S seeds (scores [S, n], thresholds [S])."""
    per_seed = [weighted_metrics(cases, s, t, resampling.weights) for s, t in zip(scores, thresholds)]
    return {m: np.stack([d[m] for d in per_seed], axis=1) for m in METRICS}


def point_values(cases: Cases, scores: np.ndarray, thresholds: np.ndarray) -> dict:
    """{metric: [S]} on the whole test split."""
    ones = np.ones((1, cases.n_patients))
    return {m: np.array([weighted_metrics(cases, s, t, ones)[m][0] for s, t in zip(scores, thresholds)])
            for m in METRICS}


def estimate(point: np.ndarray, draws: np.ndarray, resampling: Resampling, difference: bool = False,
             with_p: bool = False) -> Estimate:
    """Seed-mean `point` [S] with the percentile interval (and a p-value against 0) of `draws` [B, S].

    Every metric here is a rate in [0, 1] (a difference of two in [-1, 1]); the heavy-tailed seed
    term of few seeds can reach past that, so the interval is clipped to the possible range."""
    raw = resampling.combine(point, draws)
    combined = raw[~np.isnan(raw)]
    value = float(np.nanmean(point))
    if len(combined) == 0:
        return Estimate(value, math.nan, math.nan, math.nan)
    tail = (1 - CONFIDENCE) / 2
    low, high = np.clip(np.quantile(combined, [tail, 1 - tail]), -1.0 if difference else 0.0, 1.0)
    p = bootstrap_p(combined) if with_p else math.nan
    return Estimate(value, float(low), float(high), p, raw, spread(point, draws))


def bootstrap_p(draws: np.ndarray) -> float:
    """Two-sided bootstrap p-value of 'the difference is 0': never below 2 / (B + 1)."""
    below, above = int((draws <= 0).sum()), int((draws >= 0).sum())
    return min(1.0, 2 * (min(below, above) + 1) / (len(draws) + 1))


# --- What a split can detect ------------------------------------------------------------------------

POWER = 0.8
SEEDS_DISAGREE_P = 0.01  # a seed spread this unlikely under patient x seed variation alone is named


def detectable(difference: Estimate, level: float) -> float:
    """The smallest true difference found with probability POWER at two-sided `level`: the distance
    from the draws' centre to their 1 - level / 2 quantile (where a difference starts to be claimed;
    a few seeds' heavy t tails count in full there), plus the POWER quantile of the difference's own
    sampling spread, normal with the standard error (0.84 of it at 80 %)."""
    if difference.draws is None or difference.spread is None:
        return math.nan
    centred = difference.draws[~np.isnan(difference.draws)]
    if not len(centred):
        return math.nan
    threshold = np.quantile(centred - centred.mean(), 1 - level / 2)
    return float(threshold + scipy.stats.norm.ppf(POWER) * difference.spread.standard_error)


def patients_to_halve(difference: Estimate, n_patients: int) -> int | None:
    """About how many test patients would halve `detectable` (its variance to a quarter), when the
    patient part can carry that; None when the seeds' own part alone is over a quarter (then more
    seeds, not patients, would)."""
    parts = difference.spread
    if parts is None or parts.patients <= 0:
        return None
    target = (parts.patients + parts.seeds) / 4
    if parts.seeds >= target:
        return None
    return math.ceil(n_patients * parts.patients / (target - parts.seeds))


def seeds_disagree(point: np.ndarray, per_seed: np.ndarray) -> float:
    """p of 'the seeds differ only by their patient x seed part' (the bootstrap's estimate of it):
    (S - 1) between-seed variance / that part, against chi-square with S - 1 degrees of freedom.
    A collapsed seed among good ones gives a tiny p."""
    if per_seed.shape[1] < 2:
        return math.nan
    between, explained = seed_parts(point, per_seed)
    if explained <= 0:
        return 0.0 if between > 0 else 1.0
    return float(scipy.stats.chi2.sf((per_seed.shape[1] - 1) * between / explained, per_seed.shape[1] - 1))


# --- Worth in real patients ---------------------------------------------------------------------------

BELOW_CURVE, BEYOND_CURVE = "below the scarce set", "beyond the largest rung"  # a Worth off either end


@dataclass(frozen=True)
class Worth:
    """Where an arm's AUC meets the oracle's learning curve, in real training patients."""
    patients: float
    low: float
    high: float
    place: str  # '' on the curve; 'below the scarce set' / 'beyond the largest rung' for the estimate

    def describe(self) -> str:
        if self.place:
            return self.place
        if math.isnan(self.low):
            return f"worth {self.patients:.0f} real patients"
        return f"worth {self.patients:.0f} real patients [{self.low:.0f}, {self.high:.0f}]"


def patients_at(auc: np.ndarray, rung_patients: np.ndarray, curve: np.ndarray) -> np.ndarray:
    """[B] the patient count at which each learning curve `curve` [B, K] (AUC at `rung_patients` [K],
    increasing) first reaches `auc` [B], by linear interpolation between rungs. A curve is made
    non-decreasing first (its running maximum: a rung never counts as worse than a smaller one).
    Below the first rung gives -inf, beyond the last +inf."""
    curve = np.maximum.accumulate(np.asarray(curve, np.float64), axis=1)
    auc = np.asarray(auc, np.float64)
    out = np.full(len(auc), np.inf)
    out[auc < curve[:, 0]] = -np.inf
    reached = curve >= auc[:, None]
    first = np.argmax(reached, axis=1)
    on_curve = reached.any(axis=1) & (auc >= curve[:, 0])
    k = first[on_curve]
    rows = np.flatnonzero(on_curve)
    at_first = k == 0
    out[rows[at_first]] = rung_patients[0]
    rows, k = rows[~at_first], k[~at_first]
    y0, y1 = curve[rows, k - 1], curve[rows, k]
    share = np.where(y1 > y0, (auc[rows] - y0) / np.where(y1 > y0, y1 - y0, 1.0), 1.0)
    out[rows] = rung_patients[k - 1] + share * (rung_patients[k] - rung_patients[k - 1])
    out[np.isnan(auc) | np.isnan(curve).any(axis=1)] = np.nan
    return out


def worth(rung_patients, curve: list[Estimate], arm: Estimate) -> Worth:
    """An arm's AUC placed on the oracle's learning curve: real training patients of equal value.

    The estimate places the arm's seed-mean AUC on the rungs' seed means; the interval repeats that
    within each draw (same drawn test patients for every rung and the arm, each with its own seed
    term), so it carries the curve's uncertainty and the arm's. Draws below the first rung or beyond
    the last count as that end; an interval reaching an end is open there."""
    rung_patients = np.asarray(rung_patients, np.float64)
    value = float(patients_at(np.array([arm.value]), rung_patients, np.array([[e.value for e in curve]]))[0])
    place = BELOW_CURVE if value == -np.inf else BEYOND_CURVE if value == np.inf else ""
    value = float(np.clip(value, rung_patients[0], rung_patients[-1]))
    if arm.draws is None or any(e.draws is None for e in curve):
        return Worth(value, math.nan, math.nan, place)
    draws = patients_at(arm.draws, rung_patients, np.stack([e.draws for e in curve], axis=1))
    draws = np.clip(draws[~np.isnan(draws)], rung_patients[0], rung_patients[-1])
    tail = (1 - CONFIDENCE) / 2
    low, high = np.quantile(draws, [tail, 1 - tail])
    return Worth(value, float(low), float(high), place)


# --- Multiplicity -----------------------------------------------------------------------------------

def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (nan stays nan and is not counted in the family)."""
    p = np.asarray(p_values, np.float64)
    adjusted = np.full(len(p), math.nan)
    valid = np.flatnonzero(~np.isnan(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()


# --- A sweep's stage-3 comparisons ------------------------------------------------------------------

@dataclass(frozen=True)
class ArmSummary:
    """One classifier x arm over its seeds: figures, the difference to real-only, and what they may claim."""
    classifier: str
    arm_id: str
    seeds: tuple[int, ...]
    metrics: dict  # metric -> Estimate
    deltas: dict  # metric -> Estimate against real-only (empty for real-only itself)
    degenerate: str  # why this arm (or its real-only baseline) carries no claim, '' when it can
    holm_p: float = math.nan  # the Δ AUC p-value, Holm-adjusted across the sweep's family
    detectable: float = math.nan  # the smallest Δ AUC this split finds at 80 % power, at the family's level
    seeds_note: str = ""  # the seeds disagree beyond what the test patients explain: each seed's AUC
    real_patients: float = math.nan  # real training patients per trial (the oracle's rungs have more)

    @property
    def arm(self) -> Arm:
        return Arm.parse(self.arm_id)


@dataclass(frozen=True)
class Utility:
    cases: Cases
    arms: list[ArmSummary]
    blocker: str  # why the whole test split carries no inferential claim ('' when it can)
    draws: int

    def method(self) -> str:
        one_seed = f" Rows with one seed: {ONE_SEED}." if any(len(a.seeds) == 1 for a in self.arms) else ""
        return (f"Every figure rests on {self.cases.describe()} and the seeds listed per row. Intervals are "
                f"{CONFIDENCE:.0%} percentile intervals and p-values two-sided, from "
                + RESAMPLED.format(draws=self.draws) + f". {self.family()}" + one_seed)

    def family(self) -> str:
        n = self.family_size()
        if not n:
            return "No comparison here carries a p-value (see the status column and the notes)."
        return (f"The Δ AUC p-values are Holm-corrected across the {n} comparison(s) with real only in this sweep "
                "(degenerate arms and the train-synthetic-test-real proxy excluded).")

    def family_size(self) -> int:
        return sum(1 for a in self.arms if not math.isnan(a.holm_p))


def utility(results, min_patients_per_label: int, draws: int = DRAWS, seed: int = 0) -> Utility:
    """Every classifier x arm of `results` (one row per trial: classifier, arm_id, seed, threshold,
    test_scores, test_labels, test_patients, degenerate) against its real-only arm."""
    first = results.iloc[0]
    cases = Cases.of(first.test_labels, first.test_patients)
    blocker = inference_blocker(cases, min_patients_per_label)
    arms = []
    for (classifier, arm_id), group in results.groupby(["classifier", "arm_id"], sort=False):
        baseline = results[(results.classifier == classifier) & (results.arm_id == "real")]
        arms.append(_summarise(cases, group, baseline, arm_id == "real", blocker, draws, seed,
                               arm_stream(classifier, arm_id)))
    # the family: every arm of a compared kind with a difference to real only (`ArmKind.compared`)
    adjusted = holm([a.deltas["roc_auc"].p if a.deltas and a.arm.spec.compared else math.nan for a in arms])
    # Holm's first step, the one a single true effect among nulls must pass, is at ALPHA / family size
    level = ALPHA / max(1, sum(not math.isnan(p) for p in adjusted))
    arms = [dataclasses.replace(a, holm_p=p, detectable=detectable(a.deltas["roc_auc"], level) if not math.isnan(p)
                                else math.nan) for a, p in zip(arms, adjusted)]
    if not blocker and all(len(a.seeds) < 2 for a in arms):
        blocker = f"one training seed per arm: {ONE_SEED}"
    return Utility(cases, arms, blocker, draws)


def arm_stream(classifier: str, arm_id: str) -> int:
    """The random stream of one classifier x arm's seed term, from its names: the same whatever order
    its trials finished in, so the same results give the same intervals (numbered in order of
    appearance, two runs of the same sweep moved interval ends by up to 0.003)."""
    return zlib.crc32(f"{classifier}\0{arm_id}".encode())


def _summarise(cases: Cases, group, baseline, is_baseline: bool, blocker: str, draws: int,
               seed: int, stream: int) -> ArmSummary:
    for row in group.itertuples():
        _check_same_cases(cases, row)
    seeds = sorted(set(group.seed) if is_baseline else set(group.seed) & set(baseline.seed))
    degenerate, base_degenerate = _degenerate(group), _degenerate(baseline)
    if not is_baseline and base_degenerate and not degenerate:
        degenerate = f"its real-only baseline is degenerate ({base_degenerate})"
    if not seeds:  # no paired real-only run: report the arm alone
        seeds = sorted(set(group.seed))
        baseline = baseline.iloc[0:0]
    scores, thresholds = _seed_scores(group, seeds)
    resampling = Resampling.draw(cases, len(seeds), draws, seed, stream)
    claims = not blocker and len(seeds) >= 2
    drawn = metric_draws(cases, scores, thresholds, resampling)
    point = point_values(cases, scores, thresholds)
    metrics = {m: estimate(point[m], drawn[m], resampling) if claims else
               Estimate(float(np.nanmean(point[m])), math.nan, math.nan, math.nan) for m in METRICS}
    deltas = {}
    if not is_baseline and len(baseline):
        base_scores, base_thresholds = _seed_scores(baseline, seeds)
        base_drawn = metric_draws(cases, base_scores, base_thresholds, resampling)
        base_point = point_values(cases, base_scores, base_thresholds)
        testable = claims and not degenerate
        deltas = {m: estimate(point[m] - base_point[m], drawn[m] - base_drawn[m], resampling, difference=True,
                              with_p=testable)
                  if claims else Estimate(float(np.nanmean(point[m] - base_point[m])), math.nan, math.nan, math.nan)
                  for m in METRICS}
    seeds_note = ""
    if claims and seeds_disagree(point["roc_auc"], drawn["roc_auc"]) < SEEDS_DISAGREE_P:
        seeds_note = ("its seeds disagree beyond what the test patients explain (AUC "
                      + ", ".join(f"seed {s} {v:.3f}" for s, v in zip(seeds, point["roc_auc"])) + ")")
    real_patients = float(group.real_patients.mean()) if "real_patients" in group else math.nan
    return ArmSummary(group.classifier.iloc[0], group.arm_id.iloc[0], tuple(int(s) for s in seeds), metrics, deltas,
                      degenerate, seeds_note=seeds_note, real_patients=real_patients)


def _degenerate(trials) -> str:
    """Why any of these trials is degenerate: as its trial said, or its test scores (checked here
    too, so that no constant model gets a p-value whatever recorded it)."""
    reasons = {getattr(r, "degenerate", "") or degenerate_reason(r.test_scores, math.nan, "test")
               for r in trials.itertuples()}
    return "; ".join(sorted(r for r in reasons if r))


def _seed_scores(trials, seeds: list[int]) -> tuple[np.ndarray, np.ndarray]:
    by_seed = {int(r.seed): r for r in trials.itertuples()}
    return (np.array([by_seed[s].test_scores for s in seeds], np.float64),
            np.array([by_seed[s].threshold for s in seeds], np.float64))


def _check_same_cases(cases: Cases, row) -> None:
    other = Cases.of(row.test_labels, row.test_patients)
    if not (np.array_equal(other.labels, cases.labels) and np.array_equal(other.patients, cases.patients)):
        raise ValueError(f"trial {row.classifier} / {row.arm_id} / seed {row.seed} was scored on other test cases "
                         "than the rest of the sweep: arms cannot be paired")


