"""The built-in phantom cohort: seeded PET and CT slices through a lung nodule, as real DICOM.

Each patient gets a thorax (body, two lungs, spine, vessels) and one nodule whose look
depends on the label, as SPEC.md says: malignant nodules are on average larger, irregular
or spiculated and take up more FDG; benign ones small, smooth and low-uptake (sometimes
calcified on CT). Each label has several subtypes (see SUBTYPES) whose ranges overlap, so a
classifier needs data to learn the task: with 10 % of the training patients it scores
clearly lower than with all of them (tests/orchestrator/data/test_learnability.py).

Pixel values are physical: CT in HU (stored + rescale intercept -1024), PET in Bq/ml
(stored uint16 with a per-slice RescaleSlope), decay-corrected to the series start, with the
tags SUV needs. Everything derives from the seed, so the same seed gives the same bytes.
"""
from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from scipy import ndimage

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
PET_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
# A targeted reconstruction (display FOV 160 mm) around the nodule, as nodule work-ups use:
# at 64 px a pixel is 2.5 mm, so 4-15 mm nodules stay visible at the small sizes tests use.
FIELD_OF_VIEW_MM = 160.0
F18_HALF_LIFE_S = 6586.2
PET_PSF_SIGMA_MM = 2.5  # ~6 mm FWHM: small hot nodules lose contrast (partial volume)


@dataclass(frozen=True)
class Subtype:
    """One kind of nodule: ranges its patients are drawn from (uniform)."""

    prevalence: float
    radius_mm: tuple[float, float]
    lobulation: float  # largest amplitude of the boundary harmonics
    spikes: tuple[int, int]  # number of spicules, [low, high)
    spike_length: float  # longest spicule, as a fraction of the radius
    suv_max: tuple[float, float]
    ct_hu: tuple[float, float]
    calcified: float  # probability of a calcified core on CT


# Several subtypes per label, as in the clinic: FDG-avid inflammatory benign nodules and
# low-uptake ground-glass cancers mean neither size nor uptake alone decides, and a
# classifier needs enough patients to have seen every kind.
SUBTYPES = {
    "malignant": (
        Subtype(0.6, (7.0, 14.0), 0.16, (3, 9), 0.9, (4.0, 10.0), (-20, 60), 0.0),  # solid, spiculated
        Subtype(0.25, (4.0, 7.5), 0.12, (0, 3), 0.5, (2.5, 5.5), (-20, 60), 0.0),  # small solid
        Subtype(0.15, (8.0, 14.0), 0.06, (0, 1), 0.3, (1.0, 2.5), (-550, -350), 0.0),  # ground glass
    ),
    "benign": (
        Subtype(0.5, (3.0, 6.5), 0.04, (0, 1), 0.3, (0.7, 2.0), (-20, 60), 0.5),  # granuloma
        Subtype(0.15, (6.0, 11.0), 0.12, (0, 4), 0.5, (3.0, 7.0), (-20, 60), 0.0),  # inflammatory, FDG-avid
        Subtype(0.35, (5.0, 10.0), 0.10, (0, 1), 0.3, (0.7, 1.8), (-80, 40), 0.3),  # hamartoma
    ),
}
MODALITY_FOLDERS = {"pet": "pet", "ct": "ct"}


@dataclass(frozen=True)
class Nodule:
    radius_mm: float
    lobulation: tuple[tuple[float, float], ...]  # (amplitude, phase) for harmonics k = 2, 3, ...
    spikes: tuple[tuple[float, float], ...]  # (angle, length as a fraction of the radius)
    suv_max: float
    ct_hu: float
    calcified: bool
    centre_mm: tuple[float, float]


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
    view_centre_mm: tuple[float, float]  # centre of the reconstructed field of view


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
    lobulation = tuple((rng.uniform(0.0, subtype.lobulation), rng.uniform(0, 2 * np.pi)) for _ in range(5))
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
    )


# ---------------------------------------------------------------------------- rendering


def _grid_mm(p: Patient, size: int) -> tuple[np.ndarray, np.ndarray]:
    spacing = FIELD_OF_VIEW_MM / size
    axis = (np.arange(size) - (size - 1) / 2) * spacing
    x, y = np.meshgrid(axis, axis, indexing="xy")
    return x + p.view_centre_mm[0], y + p.view_centre_mm[1]


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
    return r <= n.radius_mm * cross_section * boundary


def _anatomy(p: Patient, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    a, b = p.body_axes_mm
    la, lb = p.lung_axes_mm
    body = (x / a) ** 2 + (y / b) ** 2 <= 1
    lungs = np.zeros_like(body)
    for side in (-1, 1):
        lungs |= ((x - side * 0.5 * a) / la) ** 2 + ((y + 0.05 * b) / lb) ** 2 <= 1
    spine = np.hypot(x, y - 0.72 * b) <= 0.12 * b
    vessels = np.zeros_like(body)
    for _ in range(int(rng.integers(3, 9))):  # round vessels in the lung: nodule look-alikes
        cx, cy = rng.uniform(x.min(), x.max()), rng.uniform(y.min(), y.max())
        vessels |= np.hypot(x - cx, y - cy) <= rng.uniform(1.5, 4.0)
    return {"body": body, "lungs": lungs & body, "spine": spine & body, "vessels": vessels & lungs}


def render_ct(p: Patient, size: int, cross_section: float, rng: np.random.Generator) -> np.ndarray:
    """One CT slice in HU."""
    x, y = _grid_mm(p, size)
    parts = _anatomy(p, x, y, rng)
    hu = np.full(x.shape, -1000.0)
    hu[parts["body"]] = 40.0
    hu[parts["lungs"]] = -850.0
    hu[parts["vessels"]] = -50.0
    hu[parts["spine"]] = 450.0
    nodule = _nodule_mask(p, x, y, cross_section) & parts["lungs"]
    hu[nodule] = p.nodule.ct_hu
    if p.nodule.calcified:
        hu[_nodule_mask(p, x, y, cross_section * 0.4) & nodule] = 350.0
    hu = ndimage.gaussian_filter(hu, sigma=0.6 * size / 256)
    return hu + rng.normal(0.0, p.ct_noise_hu, hu.shape)


def render_pet_suv(p: Patient, size: int, cross_section: float, rng: np.random.Generator) -> np.ndarray:
    """One PET slice in SUV (body-weight), blurred by the scanner PSF, with count noise."""
    x, y = _grid_mm(p, size)
    parts = _anatomy(p, x, y, rng)
    suv = np.zeros(x.shape)
    suv[parts["body"]] = rng.uniform(0.6, 1.6)
    suv[parts["lungs"]] = rng.uniform(0.2, 0.8)
    suv[np.hypot(x, y + 0.1 * p.body_axes_mm[1]) <= 0.2 * p.body_axes_mm[1]] = 1.8  # blood pool
    nodule = _nodule_mask(p, x, y, cross_section) & parts["lungs"]
    n_r = np.hypot(x - p.nodule.centre_mm[0], y - p.nodule.centre_mm[1]) / p.nodule.radius_mm
    suv[nodule] = p.nodule.suv_max * np.clip(1.1 - 0.4 * n_r[nodule], 0.5, 1.0)
    # Physiological uptake outside the lungs (lymph nodes, oesophagus, brown fat): hot spots
    # that are not nodules, so "brightest pixel" is not the answer and context must be learnt.
    tissue = parts["body"] & ~parts["lungs"]
    for _ in range(int(rng.integers(1, 5))):
        cx, cy = rng.uniform(x.min(), x.max()), rng.uniform(y.min(), y.max())
        spot = (np.hypot(x - cx, y - cy) <= rng.uniform(3.0, 12.0)) & tissue
        suv[spot] = rng.uniform(2.0, 9.0)
    suv = ndimage.gaussian_filter(suv, sigma=PET_PSF_SIGMA_MM * size / FIELD_OF_VIEW_MM)
    noisy = suv + rng.normal(0.0, 1.0, suv.shape) * p.pet_noise * np.sqrt(np.maximum(suv, 0.0))
    return np.maximum(noisy, 0.0)


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


def _image_dataset(p: Patient, seed: int, modality: str, slice_index: int, z_mm: float,
                   size: int, stored: np.ndarray) -> Dataset:
    sop_class = PET_IMAGE_STORAGE if modality == "pet" else CT_IMAGE_STORAGE
    ds = _base_dataset(p, seed, sop_class, _uid(seed, modality, p.index, slice_index))
    ds.Modality = "PT" if modality == "pet" else "CT"
    ds.SeriesInstanceUID = _uid(seed, "series", modality, p.index)
    ds.SeriesNumber = 1 if modality == "ct" else 2
    ds.SeriesDate = ds.StudyDate
    ds.InstanceNumber = slice_index + 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    spacing = FIELD_OF_VIEW_MM / size
    ds.PixelSpacing = [f"{spacing:.6g}", f"{spacing:.6g}"]
    ds.SliceThickness = "2"
    corner = [c - FIELD_OF_VIEW_MM / 2 + spacing / 2 for c in p.view_centre_mm]
    ds.ImagePositionPatient = [f"{corner[0]:.6g}", f"{corner[1]:.6g}", f"{z_mm:.4g}"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.SliceLocation = f"{z_mm:.4g}"
    ds.set_pixel_data(stored, "MONOCHROME2", 16, generate_instance_uid=False)
    return ds


def _ct_dataset(p: Patient, seed: int, j: int, z: float, size: int, hu: np.ndarray) -> Dataset:
    stored = np.clip(np.round(hu + 1024), 0, 4095).astype(np.uint16)
    ds = _image_dataset(p, seed, "ct", j, z, size, stored)
    ds.SeriesTime = "091000"
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
    ds.KVP = "120"
    ds.WindowCenter, ds.WindowWidth = "-600", "1500"
    return ds


def _pet_dataset(p: Patient, seed: int, j: int, z: float, size: int, suv: np.ndarray) -> Dataset:
    series_start = dt.datetime.combine(p.study_date, dt.time(9, 0)) + dt.timedelta(seconds=p.uptake_s)
    injection = dt.datetime.combine(p.study_date, dt.time(9, 0))
    # Images are decay-corrected to the series start: SUV = C * weight / dose(at series start).
    dose_at_start = p.injected_dose_bq * 2 ** (-p.uptake_s / F18_HALF_LIFE_S)
    bq_ml = suv * dose_at_start / (p.weight_kg * 1000.0)
    slope = max(float(bq_ml.max()), 1.0) / 60000.0
    stored = np.round(bq_ml / slope).astype(np.uint16)
    ds = _image_dataset(p, seed, "pet", j, z, size, stored)
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


def write_phantom_cohort(out: Path, patients: int = 80, modality: str = "both", size: int = 256,
                         seed: int = 0, slices: int = 4) -> Path:
    """Write the cohort under `out/{pet,ct}/pNNN/slice_NN.dcm` plus `out/labels.csv`; return the CSV path."""
    if patients < 1 or slices < 1 or size < 16:
        raise ValueError("need at least 1 patient, 1 slice and 16 px")
    modalities = ["pet", "ct"] if modality == "both" else [modality]
    cohort = make_patients(patients, seed)
    for p in cohort:
        for m in modalities:
            folder = out / MODALITY_FOLDERS[m] / f"p{p.index:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            for j, (z, scale) in enumerate(slice_cross_sections(p, slices)):
                rng = np.random.default_rng([seed, 2, p.index, j, m == "pet"])
                if m == "ct":
                    ds = _ct_dataset(p, seed, j, z, size, render_ct(p, size, scale, rng))
                else:
                    ds = _pet_dataset(p, seed, j, z, size, render_pet_suv(p, size, scale, rng))
                pydicom.dcmwrite(folder / f"slice_{j:02d}.dcm", ds, enforce_file_format=True)
    labels = out / "labels.csv"
    with labels.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["patient_id", "label"])
        writer.writerows((p.patient_id, p.label) for p in cohort)
    return labels
