"""The built-in phantom cohort: seeded PET and CT series of a thorax with a lung nodule, as real DICOM.

By default (`layout="series"`) each patient gets what a real download holds: a whole axial
series per modality at the scanner spacing of `MODALITIES` (PET 4 mm, CT 1.25 mm in plane,
over a 400 mm field of view), covering the nodule's level, with the nodule at a varied,
recorded place inside a lung, optionally as one enhanced multi-frame file per series; and
`nodules.csv` gives every nodule in world millimetres, as LUNA16 does. `layout="slices"` writes
the older shape: a few targeted slices through the nodule plus `labels.csv` (whole-slice
input, which ingest still takes).

Each patient gets a thorax (body, two lungs, spine, vessels) and one nodule whose look
depends on the label the way it does in the clinic: several subtypes per label (see SUBTYPES),
between which size and FDG uptake overlap and point in opposite directions (a small intensely avid
nodule is a cancer, a large avid even one usually inflammation), and a margin (lobulated,
spiculated) or an inside (a necrotic core; a calcified core on CT) that marks some of them. No
single cue decides, so a classifier needs many patients to learn the task
(tests/orchestrator/data/test_learnability.py). Each nodule's parameters are
written beside the cohort folder (`truth_path`), never into the DICOM: what an ideal observer
would use, and the ceiling of what the images allow.

Pixel values are physical: CT in HU (stored + rescale intercept -1024), PET in Bq/ml
(stored uint16 with a per-slice RescaleSlope), decay-corrected to the series start, with the
tags SUV needs. Everything derives from the seed, so the same seed gives the same bytes.
"""
from __future__ import annotations

import copy
import csv
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from scipy import ndimage, optimize, stats

from orchestrator.data.modalities import MODALITIES

# A targeted reconstruction (display FOV 160 mm) around the nodule, as nodule work-ups use:
# at 64 px a pixel is 2.5 mm, so 4-15 mm nodules stay visible at the small sizes tests use.
FIELD_OF_VIEW_MM = 160.0
BODY_FIELD_OF_VIEW_MM = 400.0  # a whole-body reconstruction: what a series layout is written at
CT_BLUR_MM = 0.375  # the scanner's in-plane resolution on CT
F18_HALF_LIFE_S = 6586.2
PET_PSF_SIGMA_MM = 2.5  # ~6 mm FWHM: small hot nodules lose contrast (partial volume)


@dataclass(frozen=True)
class Subtype:
    """One kind of nodule: ranges its patients are drawn from (uniform)."""

    prevalence: float
    radius_mm: tuple[float, float]
    lobulation: tuple[float, float]  # boundary harmonics k = 2-5, amplitude this / (k - 1): an irregular margin
    spikes: tuple[int, int]  # number of spicules, [low, high)
    spike_length: float  # longest spicule, as a fraction of the radius
    suv_max: tuple[float, float]
    ct_hu: tuple[float, float]
    calcified: float  # probability of a calcified core on CT
    necrosis: tuple[float, float] = (0.0, 0.0)  # depth of a central cold core (uptake and density), 0-1


# Several subtypes per label, as in the clinic, each with a look of its own; between them, size and
# uptake overlap and point in opposite directions: a small intensely avid nodule is a cancer, a large
# avid even one usually inflammation; a faint small one a granuloma, a faint large one a lepidic
# cancer; a ring of uptake (necrotic core) or a spiculated margin a cancer, a gently lobulated faint
# one a hamartoma. No single cue decides, and a rule read off a few patients (brighter is worse)
# holds for some subtypes and fails for others, so a classifier needs many patients to learn the task
# (measured: bench/results.md, the learning curve; tests/orchestrator/data/test_learnability.py), and
# an ideal observer on the recorded parameters (`nodule_parameters`) gives the ceiling.
SUBTYPES = {
    "malignant": (
        Subtype(0.30, (7.0, 13.0), (0.05, 0.20), (0, 3), 0.5, (3.0, 8.0), (-20, 60), 0.0, necrosis=(0.7, 0.95)),
        Subtype(0.30, (3.5, 6.0), (0.0, 0.15), (0, 2), 0.5, (5.0, 10.0), (-20, 60), 0.0),  # small, intensely avid
        Subtype(0.25, (6.0, 11.0), (0.30, 0.45), (3, 7), 0.8, (2.5, 6.0), (-300, 40), 0.0),  # lobulated, spiculated
        Subtype(0.15, (8.0, 13.0), (0.05, 0.20), (0, 2), 0.5, (1.2, 2.2), (-500, -200), 0.0),  # lepidic: faint, large
    ),
    "benign": (
        Subtype(0.35, (3.5, 7.0), (0.0, 0.10), (0, 1), 0.3, (1.0, 2.5), (-20, 60), 0.4),  # granuloma
        Subtype(0.30, (8.0, 13.0), (0.0, 0.08), (0, 1), 0.3, (3.5, 8.0), (-20, 60), 0.0),  # inflammatory: avid, even
        Subtype(0.20, (6.0, 10.0), (0.10, 0.20), (0, 1), 0.3, (1.0, 2.0), (-20, 60), 0.3),  # hamartoma
        Subtype(0.15, (4.0, 7.0), (0.0, 0.10), (0, 1), 0.3, (2.5, 5.0), (-20, 60), 0.0),  # active granuloma
    ),
}


@dataclass(frozen=True)
class Nodule:
    radius_mm: float
    lobulation: tuple[tuple[float, float], ...]  # (amplitude, phase) for harmonics k = 2, 3, ...
    spikes: tuple[tuple[float, float], ...]  # (angle, length as a fraction of the radius)
    suv_max: float
    ct_hu: float
    calcified: bool
    centre_mm: tuple[float, float]
    necrosis: float = 0.0


@dataclass(frozen=True)
class Patient:
    index: int
    patient_id: str
    name: str
    birth_date: str
    sex: str
    weight_kg: float
    label: str  # "benign" | "malignant"
    body_axes_mm: tuple[float, float]
    lung_axes_mm: tuple[float, float]
    nodule: Nodule
    ct_noise_hu: float
    pet_noise: float
    injected_dose_bq: float
    uptake_s: float
    study_date: dt.date
    view_centre_mm: tuple[float, float]  # centre of the targeted reconstruction (slices layout)
    nodule_z_mm: float  # the nodule centre's table position (series layout)
    series_shift: float  # where the nodule sits along its series, as a share of the series' length


def make_patients(count: int, seed: int) -> list[Patient]:
    """Draw `count` patients; labels are balanced (every second one malignant, shuffled)."""
    rng = np.random.default_rng([seed, 0])
    labels = np.array(["malignant" if i % 2 else "benign" for i in range(count)])
    rng.shuffle(labels)
    return [_make_patient(i, str(label), np.random.default_rng([seed, 1, i])) for i, label in enumerate(labels)]


def _make_patient(index: int, label: str, rng: np.random.Generator) -> Patient:
    body = (rng.uniform(150, 185), rng.uniform(105, 130))
    lung = (rng.uniform(0.28, 0.34) * body[0], rng.uniform(0.62, 0.72) * body[1])
    subtype = SUBTYPES[label][rng.choice(len(SUBTYPES[label]), p=[t.prevalence for t in SUBTYPES[label]])]
    radius = rng.uniform(*subtype.radius_mm)
    low, high = subtype.lobulation
    lobulation = tuple((rng.uniform(low, high) / k, rng.uniform(0, 2 * np.pi)) for k in range(1, 5))
    spikes = tuple((rng.uniform(0, 2 * np.pi), rng.uniform(0.3, subtype.spike_length))
                   for _ in range(rng.integers(*subtype.spikes)))
    suv_max = rng.uniform(*subtype.suv_max)
    side = rng.choice([-1.0, 1.0])
    lung_centre_x = side * 0.5 * body[0]
    # keep the nodule well inside the lung ellipse
    angle, reach = rng.uniform(0, 2 * np.pi), rng.uniform(0.0, 0.55)
    centre = (lung_centre_x + reach * lung[0] * np.cos(angle), reach * lung[1] * np.sin(angle))
    nodule = Nodule(
        radius_mm=float(radius),
        lobulation=lobulation,
        spikes=spikes,
        suv_max=float(suv_max),
        ct_hu=float(rng.uniform(*subtype.ct_hu)),
        calcified=bool(rng.random() < subtype.calcified),
        centre_mm=(float(centre[0]), float(centre[1])),
        necrosis=float(rng.uniform(*subtype.necrosis)),
    )
    weight = float(np.round(rng.uniform(50, 100), 1))
    birth = dt.date(1940, 1, 1) + dt.timedelta(days=int(rng.integers(0, 365 * 40)))
    return Patient(
        index=index,
        patient_id=f"MRN{rng.integers(10**6, 10**7)}",
        name=f"PHANTOM^CASE{index:04d}{rng.integers(100, 999)}",
        birth_date=birth.strftime("%Y%m%d"),
        sex=str(rng.choice(["F", "M"])),
        weight_kg=weight,
        label=label,
        body_axes_mm=body,
        lung_axes_mm=lung,
        nodule=nodule,
        ct_noise_hu=float(rng.uniform(12, 35)),
        pet_noise=float(rng.uniform(0.15, 0.35)),
        injected_dose_bq=float(np.round(weight * rng.uniform(3.0, 4.5) * 1e6, -4)),
        uptake_s=float(rng.uniform(50, 75) * 60),
        study_date=dt.date(2020, 1, 1) + dt.timedelta(days=int(rng.integers(0, 1500))),
        view_centre_mm=(float(centre[0] + rng.uniform(-35, 35)), float(centre[1] + rng.uniform(-35, 35))),
        nodule_z_mm=float(rng.uniform(-180.0, -60.0)),
        series_shift=float(rng.uniform(-0.25, 0.25)),
    )


# ---------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class View:
    """A reconstructed field of view: its centre (x, y in mm), width in mm and pixels."""

    centre_mm: tuple[float, float]
    fov_mm: float
    size: int

    @property
    def spacing(self) -> float:
        return self.fov_mm / self.size

    @property
    def corner_mm(self) -> tuple[float, float]:
        """Centre of the first pixel: DICOM's Image Position (Patient), x and y."""
        return tuple(c - self.fov_mm / 2 + self.spacing / 2 for c in self.centre_mm)


def targeted_view(p: Patient, size: int) -> View:
    return View(p.view_centre_mm, FIELD_OF_VIEW_MM, size)


def _grid_mm(view: View) -> tuple[np.ndarray, np.ndarray]:
    axis = (np.arange(view.size) - (view.size - 1) / 2) * view.spacing
    x, y = np.meshgrid(axis, axis, indexing="xy")
    return x + view.centre_mm[0], y + view.centre_mm[1]


def _scattered(rng: np.random.Generator, low: int, high: int, view: View) -> int:
    """How many scattered structures (vessels, hot spots) a view holds: as many per area as in
    the targeted view, whatever the field of view."""
    return int(rng.integers(low, high) * round((view.fov_mm / FIELD_OF_VIEW_MM) ** 2))


def _nodule_mask(p: Patient, x: np.ndarray, y: np.ndarray, cross_section: float) -> np.ndarray:
    """Boolean mask of the nodule in a slice where its radius is scaled by `cross_section`."""
    n = p.nodule
    dx, dy = x - n.centre_mm[0], y - n.centre_mm[1]
    r, theta = np.hypot(dx, dy), np.arctan2(dy, dx)
    boundary = np.ones_like(theta)
    for k, (amp, phase) in enumerate(n.lobulation, start=2):
        boundary += amp * np.cos(k * theta + phase)
    for angle, length in n.spikes:  # thin spicules: narrow angular peaks
        gap = np.angle(np.exp(1j * (theta - angle)))
        boundary += length * np.exp(-0.5 * (gap / 0.07) ** 2)
    return r <= n.radius_mm * cross_section * boundary if cross_section > 0 else np.zeros_like(r, bool)


def _anatomy(p: Patient, x: np.ndarray, y: np.ndarray, view: View, rng: np.random.Generator) -> dict[str, np.ndarray]:
    a, b = p.body_axes_mm
    la, lb = p.lung_axes_mm
    body = (x / a) ** 2 + (y / b) ** 2 <= 1
    lungs = np.zeros_like(body)
    for side in (-1, 1):
        lungs |= ((x - side * 0.5 * a) / la) ** 2 + ((y + 0.05 * b) / lb) ** 2 <= 1
    spine = np.hypot(x, y - 0.72 * b) <= 0.12 * b
    vessels = np.zeros_like(body)
    for _ in range(_scattered(rng, 3, 9, view)):  # round vessels in the lung: nodule look-alikes
        cx, cy = rng.uniform(x.min(), x.max()), rng.uniform(y.min(), y.max())
        vessels |= np.hypot(x - cx, y - cy) <= rng.uniform(1.5, 4.0)
    return {"body": body, "lungs": lungs & body, "spine": spine & body, "vessels": vessels & lungs}


def render_ct(p: Patient, view: View, cross_section: float, rng: np.random.Generator) -> np.ndarray:
    """One CT slice in HU."""
    x, y = _grid_mm(view)
    parts = _anatomy(p, x, y, view, rng)
    hu = np.full(x.shape, -1000.0)
    hu[parts["body"]] = 40.0
    hu[parts["lungs"]] = -850.0
    hu[parts["vessels"]] = -50.0
    hu[parts["spine"]] = 450.0
    nodule = _nodule_mask(p, x, y, cross_section) & parts["lungs"]
    hu[nodule] = p.nodule.ct_hu
    core = _nodule_mask(p, x, y, cross_section * 0.5) & nodule
    hu[core] -= 60.0 * p.nodule.necrosis  # a necrotic core is a little less dense (fluid, debris)
    if p.nodule.calcified:
        hu[_nodule_mask(p, x, y, cross_section * 0.4) & nodule] = 350.0
    hu = ndimage.gaussian_filter(hu, sigma=CT_BLUR_MM / view.spacing)
    return hu + rng.normal(0.0, p.ct_noise_hu, hu.shape)


def render_pet_suv(p: Patient, view: View, cross_section: float, rng: np.random.Generator) -> np.ndarray:
    """One PET slice in SUV (body-weight), blurred by the scanner PSF, with count noise."""
    x, y = _grid_mm(view)
    parts = _anatomy(p, x, y, view, rng)
    suv = np.zeros(x.shape)
    suv[parts["body"]] = rng.uniform(0.6, 1.6)
    suv[parts["lungs"]] = rng.uniform(0.2, 0.8)
    suv[np.hypot(x, y + 0.1 * p.body_axes_mm[1]) <= 0.2 * p.body_axes_mm[1]] = 1.8  # blood pool
    nodule = _nodule_mask(p, x, y, cross_section) & parts["lungs"]
    suv[nodule] = p.nodule.suv_max * _uptake_profile(p.nodule, x, y)[nodule]
    # Physiological uptake outside the lungs (lymph nodes, oesophagus, brown fat): hot spots
    # that are not nodules, so "brightest pixel" is not the answer and context must be learnt.
    tissue = parts["body"] & ~parts["lungs"]
    for _ in range(_scattered(rng, 1, 5, view)):
        cx, cy = rng.uniform(x.min(), x.max()), rng.uniform(y.min(), y.max())
        spot = (np.hypot(x - cx, y - cy) <= rng.uniform(3.0, 12.0)) & tissue
        suv[spot] = rng.uniform(2.0, 9.0)
    suv = ndimage.gaussian_filter(suv, sigma=PET_PSF_SIGMA_MM / view.spacing)
    noisy = suv + rng.normal(0.0, 1.0, suv.shape) * p.pet_noise * np.sqrt(np.maximum(suv, 0.0))
    return np.maximum(noisy, 0.0)


def _uptake_profile(n: Nodule, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Relative FDG uptake inside a nodule (1 = suv_max): centrally peaked; a necrotic core takes the
    centre down (a ring of uptake)."""
    dx, dy = (x - n.centre_mm[0]) / n.radius_mm, (y - n.centre_mm[1]) / n.radius_mm
    profile = np.clip(1.1 - 0.4 * np.hypot(dx, dy), 0.5, 1.0)
    profile = profile * (1.0 - n.necrosis * np.exp(-(dx**2 + dy**2) / (2 * 0.3**2)))
    return profile


def nodule_parameters(p: Patient) -> dict:
    """A patient's ground-truth nodule parameters: what an ideal observer would use (never in the DICOM)."""
    n = p.nodule
    return {"diameter_mm": 2 * n.radius_mm, "suv_max": n.suv_max, "ct_hu": n.ct_hu, "calcified": int(n.calcified),
            "lobulation": float(sum(amp for amp, _ in n.lobulation)), "spicules": len(n.spikes),
            "necrosis": n.necrosis, "label": p.label}


def ideal_observer_auc(rows: list[dict], folds: int = 5, seed: int = 0) -> float:
    """Cross-validated ROC-AUC of a logistic regression on recorded nodule parameters (`nodule_parameters`
    rows; every key but "label" is a feature): how well a reader who saw the true parameters would do,
    the ceiling a classifier's learning curve is read against."""
    keys = [k for k in rows[0] if k != "label"]
    x = np.array([[float(r[k]) for k in keys] for r in rows])
    y = np.array([r["label"] == "malignant" for r in rows], np.float64)
    fold = np.random.default_rng(seed).permutation(len(rows)) % folds
    scores = np.zeros(len(rows))
    for k in range(folds):
        train, test = fold != k, fold == k
        mean, std = x[train].mean(0), x[train].std(0) + 1e-9
        design = np.c_[np.ones(train.sum()), (x[train] - mean) / std]

        def loss(w: np.ndarray) -> float:  # L2-penalised negative log-likelihood
            z = design @ w
            return float(np.sum(np.logaddexp(0, z) - y[train] * z) + 0.5 * np.sum(w[1:] ** 2))

        w = optimize.minimize(loss, np.zeros(design.shape[1]), method="L-BFGS-B").x
        scores[test] = np.c_[np.ones(test.sum()), (x[test] - mean) / std] @ w
    ranks = stats.rankdata(scores)
    n_pos = int(y.sum())
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (len(y) - n_pos)))


@dataclass(frozen=True)
class Ceiling:
    """An ideal observer's test of a cohort: AUC on the nodule parameters recorded beside it."""
    auc: float
    patients: int

    def describe(self) -> str:
        return (f"an ideal observer on the {self.patients} patients' recorded nodule parameters (logistic regression, "
                f"5-fold) reaches AUC {self.auc:.3f}: what those parameters allow; the images, with their noise and "
                "resolution, allow less")


def recorded_ceiling(folder: Path, modality: str) -> Ceiling | None:
    """The ideal observer on the parameters recorded beside the cohort `folder` (`truth_path`) for its
    `modality` series, or None where none are recorded (a user's own cohort)."""
    path = truth_path(folder)
    if not path.is_file():
        return None
    with path.open(newline="") as fh:
        rows = [{k: v for k, v in row.items() if k not in ("series_uid", "modality")}
                for row in csv.DictReader(fh) if row["modality"] == modality]
    return Ceiling(ideal_observer_auc(rows), len(rows)) if rows else None


def slice_cross_sections(p: Patient, slices: int) -> list[tuple[float, float]]:
    """(z offset in mm, nodule radius scale) for `slices` slices through the nodule centre."""
    half = (slices - 1) / 2
    step = min(2.0, 0.7 * p.nodule.radius_mm / half) if half else 0.0
    offsets = [(j - half) * step for j in range(slices)]
    return [(z, float(np.sqrt(max(1.0 - (z / p.nodule.radius_mm) ** 2, 0.05)))) for z in offsets]


# ---------------------------------------------------------------------------- DICOM


def _uid(seed: int, *parts: object) -> str:
    return generate_uid(entropy_srcs=["medgan-sweep-phantom", str(seed), *map(str, parts)])


def _base_dataset(p: Patient, seed: int, sop_class: str, sop_uid: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = _uid(0, "implementation")
    meta.ImplementationVersionName = "MEDGAN_PHANTOM"
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.PatientName, ds.PatientID = p.name, p.patient_id
    ds.PatientBirthDate, ds.PatientSex = p.birth_date, p.sex
    ds.PatientWeight = f"{p.weight_kg:.1f}"
    ds.StudyInstanceUID = _uid(seed, "study", p.index)
    ds.StudyDate = p.study_date.strftime("%Y%m%d")
    ds.StudyTime = "090000"
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "PHANTOM THORAX"
    ds.Manufacturer = "medgan-sweep phantom"
    ds.FrameOfReferenceUID = _uid(seed, "frame", p.index)
    ds.PositionReferenceIndicator = ""
    ds.BodyPartExamined = "CHEST"
    ds.PatientPosition = "FFS"
    return ds


def _image_dataset(p: Patient, seed: int, modality: str, slice_index: int, z_mm: float, view: View,
                   slice_mm: float, stored: np.ndarray) -> Dataset:
    entry = MODALITIES[modality]
    ds = _base_dataset(p, seed, entry.image_storage, _uid(seed, modality, p.index, slice_index))
    ds.Modality = entry.dicom_code
    ds.SeriesInstanceUID = _uid(seed, "series", modality, p.index)
    ds.SeriesNumber = 1 + list(WRITERS).index(modality)
    ds.SeriesDate = ds.StudyDate
    ds.InstanceNumber = slice_index + 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.PixelSpacing = [f"{view.spacing:.6g}", f"{view.spacing:.6g}"]
    ds.SliceThickness = f"{slice_mm:g}"
    corner = view.corner_mm
    ds.ImagePositionPatient = [f"{corner[0]:.6g}", f"{corner[1]:.6g}", f"{z_mm:.6g}"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.SliceLocation = f"{z_mm:.6g}"
    ds.set_pixel_data(stored, "MONOCHROME2", 16, generate_instance_uid=False)
    return ds


def _ct_dataset(p: Patient, seed: int, modality: str, j: int, z: float, view: View, slice_mm: float,
                hu: np.ndarray) -> Dataset:
    stored = np.clip(np.round(hu + 1024), 0, 4095).astype(np.uint16)
    ds = _image_dataset(p, seed, modality, j, z, view, slice_mm, stored)
    ds.SeriesTime = "091000"
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
    ds.KVP = "120"
    ds.WindowCenter, ds.WindowWidth = "-600", "1500"
    return ds


def _pet_dataset(p: Patient, seed: int, modality: str, j: int, z: float, view: View, slice_mm: float,
                 suv: np.ndarray) -> Dataset:
    series_start = dt.datetime.combine(p.study_date, dt.time(9, 0)) + dt.timedelta(seconds=p.uptake_s)
    injection = dt.datetime.combine(p.study_date, dt.time(9, 0))
    # Images are decay-corrected to the series start: SUV = C * weight / dose(at series start).
    dose_at_start = p.injected_dose_bq * 2 ** (-p.uptake_s / F18_HALF_LIFE_S)
    bq_ml = suv * dose_at_start / (p.weight_kg * 1000.0)
    slope = max(float(bq_ml.max()), 1.0) / 60000.0
    stored = np.round(bq_ml / slope).astype(np.uint16)
    ds = _image_dataset(p, seed, modality, j, z, view, slice_mm, stored)
    ds.SeriesTime = ds.AcquisitionTime = series_start.strftime("%H%M%S")
    ds.RescaleIntercept, ds.RescaleSlope = "0", f"{slope:.8g}"
    ds.Units = "BQML"
    ds.CountsSource = "EMISSION"
    ds.SeriesType = ["STATIC", "IMAGE"]
    ds.CorrectedImage = ["ATTN", "DECY"]
    ds.DecayCorrection = "START"
    ds.RandomsCorrectionMethod = "NONE"
    ds.ReconstructionMethod = "OSEM"
    ds.NumberOfSlices = 1
    ds.ImageIndex = j + 1
    ds.FrameReferenceTime = "0"
    ds.ActualFrameDuration = 180000
    ds.DecayFactor = "1"
    ds.AcquisitionDate = ds.StudyDate
    drug = Dataset()
    drug.Radiopharmaceutical = "Fluorodeoxyglucose"
    drug.RadiopharmaceuticalStartTime = injection.strftime("%H%M%S")
    drug.RadionuclideTotalDose = f"{p.injected_dose_bq:.6g}"
    drug.RadionuclideHalfLife = f"{F18_HALF_LIFE_S}"
    drug.RadionuclidePositronFraction = "0.9673"
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "C-111A1", "SRT", "^18^Fluorine"
    drug.RadionuclideCodeSequence = [code]
    ds.RadiopharmaceuticalInformationSequence = [drug]
    return ds


# What the phantom draws and writes for each modality of the registry (orchestrator.data.modalities): a
# renderer (physical values of one slice) and a DICOM writer, which takes the modality's DICOM code and
# storage class from its registry entry (so one writer can serve two modalities). A modality added there without one here
# stops at import, so the phantom, its CLI and the registry cannot disagree.
WRITERS = {"ct": (render_ct, _ct_dataset), "pet": (render_pet_suv, _pet_dataset)}
if set(WRITERS) != set(MODALITIES):
    raise ImportError(f"the phantom draws {sorted(WRITERS)}, the modality registry holds {sorted(MODALITIES)}: "
                      "add the missing renderer and writer to WRITERS")
# Per-slice attributes that an enhanced image moves into its functional groups.
FRAME_ATTRIBUTES = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness",
                    "RescaleIntercept", "RescaleSlope", "RescaleType", "InstanceNumber", "SliceLocation", "ImageIndex",
                    "NumberOfSlices", "WindowCenter", "WindowWidth")


def _as_enhanced(slices: list[Dataset], modality: str, seed: int, p: Patient) -> Dataset:
    """One enhanced multi-frame image of a series' slices: plane position and rescale per frame,
    orientation and pixel measures shared (PS3.3 C.7.6.16)."""
    entry = MODALITIES[modality]
    ds = copy.deepcopy(slices[0])
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = entry.enhanced_storage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = _uid(seed, "enhanced", modality, p.index)
    for keyword in FRAME_ATTRIBUTES:
        if keyword in ds:
            delattr(ds, keyword)
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    measures, orientation = Dataset(), Dataset()
    measures.PixelSpacing, measures.SliceThickness = slices[0].PixelSpacing, slices[0].SliceThickness
    orientation.ImageOrientationPatient = slices[0].ImageOrientationPatient
    shared = Dataset()
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = [measures], [orientation]
    ds.SharedFunctionalGroupsSequence = [shared]
    frames = []
    for s in slices:
        position, rescale, group = Dataset(), Dataset(), Dataset()
        position.ImagePositionPatient = s.ImagePositionPatient
        rescale.RescaleIntercept, rescale.RescaleSlope = s.RescaleIntercept, s.RescaleSlope
        rescale.RescaleType = entry.units
        group.PlanePositionSequence, group.PixelValueTransformationSequence = [position], [rescale]
        frames.append(group)
    ds.PerFrameFunctionalGroupsSequence = frames
    ds.set_pixel_data(np.stack([s.pixel_array for s in slices]), "MONOCHROME2", 16, generate_instance_uid=False)
    return ds


def series_positions(p: Patient, slices: int, slice_mm: float) -> np.ndarray:
    """Table positions (z, mm) of a series of `slices` slices around the nodule's level."""
    return p.nodule_z_mm + (np.arange(slices) - (slices - 1) / 2 + p.series_shift * slices) * slice_mm


def _series_slices(p: Patient, seed: int, modality: str, slices: int) -> list[Dataset]:
    in_plane, slice_mm = MODALITIES[modality].scanner_spacing_mm
    view = View((0.0, 0.0), BODY_FIELD_OF_VIEW_MM, int(round(BODY_FIELD_OF_VIEW_MM / in_plane)))
    datasets = []
    for k, z in enumerate(series_positions(p, slices, slice_mm)):
        depth = (z - p.nodule_z_mm) / p.nodule.radius_mm
        cross_section = float(np.sqrt(max(1.0 - depth ** 2, 0.0)))  # 0: the slice misses the nodule
        rng = np.random.default_rng([seed, 3, p.index, k, modality == "pet"])
        render, dataset = WRITERS[modality]
        datasets.append(dataset(p, seed, modality, k, z, view, slice_mm, render(p, view, cross_section, rng)))
    return datasets


def _targeted_slices(p: Patient, seed: int, modality: str, slices: int, size: int) -> list[Dataset]:
    view = targeted_view(p, size)
    datasets = []
    for j, (z, scale) in enumerate(slice_cross_sections(p, slices)):
        rng = np.random.default_rng([seed, 2, p.index, j, modality == "pet"])
        render, dataset = WRITERS[modality]
        datasets.append(dataset(p, seed, modality, j, z, view, 2.0, render(p, view, scale, rng)))
    return datasets


def write_phantom_cohort(out: Path, patients: int = 80, modality: str = "both", size: int = 256,
                         seed: int = 0, slices: int = 4, layout: str = "series", enhanced: bool = False) -> Path:
    """Write the cohort under `out/{pet,ct}/pNNN/` and return its table: `nodules.csv` (layout
    "series": `slices` slices per series at the modality's scanner spacing, or one enhanced
    file per series) or `labels.csv` (layout "slices": `slices` targeted slices through the
    nodule, `size` px a side)."""
    if patients < 1 or slices < 1 or size < 16 or layout not in ("series", "slices"):
        raise ValueError("need at least 1 patient, 1 slice and 16 px, and layout 'series' or 'slices'")
    if enhanced and layout != "series":
        raise ValueError("enhanced multi-frame files hold whole series: use layout 'series'")
    modalities = list(WRITERS) if modality == "both" else [modality]
    cohort = make_patients(patients, seed)
    for p in cohort:
        for m in modalities:
            folder = out / m / f"p{p.index:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            if layout == "slices":
                datasets = _targeted_slices(p, seed, m, slices, size)
            else:
                datasets = _series_slices(p, seed, m, slices)
            if enhanced:
                pydicom.dcmwrite(folder / "series.dcm", _as_enhanced(datasets, m, seed, p), enforce_file_format=True)
                continue
            for j, ds in enumerate(datasets):
                pydicom.dcmwrite(folder / f"slice_{j:03d}.dcm" if layout == "series" else folder / f"slice_{j:02d}.dcm",
                                 ds, enforce_file_format=True)
    write_truth(truth_path(out), cohort, modalities, seed)
    return _write_table(out, cohort, modalities, seed, layout)


def truth_path(out: Path) -> Path:
    """Where a cohort's ground-truth nodule parameters go: beside its folder, never inside (ingest reads
    everything inside) and never in the DICOM."""
    return out.parent / f"{out.name}-nodule-parameters.csv"


def write_truth(path: Path, cohort: list[Patient], modalities: list[str], seed: int) -> None:
    """One row per series (keyed by its SeriesInstanceUID, as nodules.csv is): `nodule_parameters`."""
    rows = [{"series_uid": _uid(seed, "series", m, p.index), "modality": m, **nodule_parameters(p)}
            for p in cohort for m in modalities]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _write_table(out: Path, cohort: list[Patient], modalities: list[str], seed: int, layout: str) -> Path:
    if layout == "slices":
        path = out / "labels.csv"
        rows = [{"patient_id": p.patient_id, "label": p.label} for p in cohort]
    else:  # the nodule in world millimetres, one row per series, as LUNA16 gives it
        path = out / "nodules.csv"
        rows = [{"series_uid": _uid(seed, "series", m, p.index), "coord_x": f"{p.nodule.centre_mm[0]:.3f}",
                 "coord_y": f"{p.nodule.centre_mm[1]:.3f}", "coord_z": f"{p.nodule_z_mm:.3f}",
                 "diameter_mm": f"{2 * p.nodule.radius_mm:.2f}", "label": p.label, "modality": m}
                for p in cohort for m in modalities]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path
