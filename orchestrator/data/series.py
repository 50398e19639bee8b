"""DICOM frames -> volumes: grouped by Series Instance UID, ordered along the slice normal.

Order comes from Image Position (Patient) projected on the normal of Image Orientation
(Patient), never from file names or Instance Numbers. A series whose slices disagree on
orientation, size, spacing or calibration, repeat a position, leave a gap, or are shifted
in plane (gantry tilt) is rejected with the reason and the files that cause it; nothing is
reordered or interpolated silently. Oblique orientations are handled: the geometry keeps
the full direction matrix.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from orchestrator.data.dicom import Frame, Image, Rejected
from orchestrator.data.geometry import Geometry, slice_axes
from orchestrator.data.modalities import Scale

ORIENTATION_TOLERANCE = 1e-3  # direction cosines
POSITION_TOLERANCE_MM = 0.01
GAP_TOLERANCE = 0.1  # a step more than 10 % off the series' usual step is a gap (or overlap)
SHEAR_TOLERANCE_MM = 0.05


@dataclass(frozen=True)
class Volume:
    """One series or volume file: physical values (slices, rows, columns) and their geometry."""

    values: np.ndarray  # float32 (k, j, i)
    geometry: Geometry
    patient_id: str  # raw identifier (or a stand-in where the file has none): pseudonymised by ingest
    study_uid: str
    series_uid: str  # "" for a volume file
    slice_uids: tuple[str, ...]  # per slice: SOP Instance UID (frame UIDs for multi-frame), "" for volume files
    slice_files: tuple[str, ...]  # per slice: the file it came from (relative to the data folder)
    scale: Scale
    key: str  # what a nodule row names: the Series Instance UID, or the volume file's relative path
    set_aside: tuple[tuple[str, str], ...] = ()  # (file, why): exact copies of a slice, left out of the volume

    @property
    def files(self) -> list[str]:
        return sorted(set(self.slice_files))


class SeriesRejected(Rejected):
    """A whole series is unusable; `files` are the ones at fault (all of them where no one is)."""

    def __init__(self, reason: str, detail: str, files: list[str]):
        super().__init__(reason, detail)
        self.files = files


def group_by_series(images: list[tuple[str, Image]]) -> dict[str, list[tuple[str, Image]]]:
    series: dict[str, list[tuple[str, Image]]] = defaultdict(list)
    for rel, image in images:
        series[image.series_uid].append((rel, image))
    return dict(series)


def assemble_series(members: list[tuple[str, Image]]) -> Volume:
    """The volume of one series' files; raise SeriesRejected with the files at fault."""
    every = sorted({rel for rel, _ in members})
    frames = [(rel, frame) for rel, image in members for frame in image.frames]
    missing = sorted({rel for rel, f in frames if f.position is None or f.orientation is None or f.spacing is None})
    if missing:
        raise SeriesRejected("missing_geometry", "no Image Position / Orientation (Patient) or Pixel Spacing in "
                             f"{len(missing)} file(s), so the slices cannot be placed in space", missing)
    _check_agreement([(rel, f.orientation) for rel, f in frames], "orientation", "inconsistent_orientation",
                     ORIENTATION_TOLERANCE)
    _check_agreement([(rel, f.spacing) for rel, f in frames], "spacing", "inconsistent_spacing", 1e-4)
    _check_agreement([(rel, f.values.shape) for rel, f in frames], "Rows x Columns", "inconsistent_size", 0)
    scales = {image.scale for _, image in members}
    if len(scales) > 1:
        raise SeriesRejected("inconsistent_calibration", f"the files carry {len(scales)} different header "
                             "calibrations (PET: SUV factors); one series should have one", every)
    row, column, normal = slice_axes(frames[0][1].orientation)
    frames.sort(key=lambda rf: float(np.dot(rf[1].position, normal)))
    frames, copies = _set_aside_copies(frames, normal)
    step = _slice_step(frames, normal)
    _check_not_sheared(frames, row, column)
    first = frames[0][1]
    patient_ids = {image.patient_id for _, image in members}
    if len(patient_ids) > 1:
        raise SeriesRejected("inconsistent_patient", f"one series, {len(patient_ids)} PatientIDs", every)
    return Volume(
        values=np.stack([f.values for _, f in frames]).astype(np.float32),
        geometry=Geometry(origin=tuple(first.position), spacing=(first.spacing[1], first.spacing[0], step),
                          direction=tuple(map(tuple, np.stack([row, column, normal], axis=1)))),
        patient_id=patient_ids.pop(), study_uid=members[0][1].study_uid, series_uid=members[0][1].series_uid,
        slice_uids=tuple(f.uid for _, f in frames), slice_files=tuple(rel for rel, _ in frames),
        scale=scales.pop(), key=members[0][1].series_uid, set_aside=tuple(copies))


def _set_aside_copies(frames: list[tuple[str, Frame]], normal: np.ndarray) -> tuple[list, list[tuple[str, str]]]:
    """The frames less exact copies (same position, same pixels: some archives, LIDC-IDRI among them, hold
    a slice twice), with each copy's file and the slice it copies. Two different slices at one position
    are left for `_slice_step` to reject."""
    kept, copies = frames[:1], []
    for rel, frame in frames[1:]:
        before_rel, before = kept[-1]
        same_place = abs(float(np.dot(np.subtract(frame.position, before.position), normal))) < POSITION_TOLERANCE_MM
        if same_place and np.array_equal(frame.values, before.values):
            copies.append((rel, f"an exact copy of {before_rel} (same position and pixels): left out of the series"))
        else:
            kept.append((rel, frame))
    return kept, copies


def _check_agreement(values: list[tuple[str, tuple]], what: str, reason: str, tolerance: float) -> None:
    """Every frame's value equals the most common one (to `tolerance`); else name the odd files."""
    usual = Counter(tuple(np.round(np.asarray(v, float), 6)) for _, v in values).most_common(1)[0][0]
    odd = sorted({rel for rel, v in values if np.max(np.abs(np.asarray(v, float) - usual)) > tolerance})
    if odd:
        raise SeriesRejected(reason, f"{len(odd)} file(s) differ from the series' usual {what} {list(usual)}", odd)


def _slice_step(frames: list[tuple[str, Frame]], normal: np.ndarray) -> float:
    """The distance between neighbouring slices; duplicates and gaps are rejected by file."""
    if len(frames) == 1:
        return 1.0  # one slice: no step to measure; crops then use that slice only
    depth = np.array([np.dot(f.position, normal) for _, f in frames])
    steps = np.diff(depth)
    for n, gap in enumerate(steps):
        if gap < POSITION_TOLERANCE_MM:
            raise SeriesRejected("duplicate_position", f"{frames[n][0]} and {frames[n + 1][0]} lie at the same "
                                 f"position ({depth[n]:.3f} mm along the normal)", [frames[n][0], frames[n + 1][0]])
    usual = float(np.median(steps))
    for n, gap in enumerate(steps):
        if abs(gap - usual) > GAP_TOLERANCE * usual:
            raise SeriesRejected("spacing_gap", f"the slices step {usual:.3f} mm, but {gap:.3f} mm between "
                                 f"{frames[n][0]} and {frames[n + 1][0]} (a missing or extra slice?)",
                                 [frames[n][0], frames[n + 1][0]])
    return usual


def _check_not_sheared(frames: list[tuple[str, Frame]], row: np.ndarray, column: np.ndarray) -> None:
    """Slices must stack straight along the normal; a gantry-tilted series is not handled."""
    origin = np.asarray(frames[0][1].position)
    for rel, f in frames[1:]:
        offset = np.asarray(f.position) - origin
        if max(abs(np.dot(offset, row)), abs(np.dot(offset, column))) > SHEAR_TOLERANCE_MM:
            raise SeriesRejected("sheared_stack", f"{rel} is shifted in its own plane against the first slice "
                                 "(gantry tilt?): such series are not handled", [rel])
