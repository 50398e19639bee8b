"""LIDC-IDRI's reader annotations (one `LidcReadMessage` XML per CT series) -> labelled nodules.

What a file holds: a `ResponseHeader` naming the series (`SeriesInstanceUid`), and up to four
`readingSession`s, one per radiologist. A session's `unblindedReadNodule`s are that reader's
nodules: characteristics rated 1-5 (malignancy among them; absent for a nodule under 3 mm, which
is one point) and one `roi` per slice it spans: `imageSOP_UID`, `imageZposition`, `inclusion`
(TRUE: an outline to fill; FALSE: a hole) and the outline's `edgeMap` points in pixels.
`nonNodule` marks are not nodules and are only counted.

From marks to nodules, per series:
1. **Place each mark** in the series: an roi's slice by its SOP Instance UID, else by its z
   position (within `z_tolerance_mm`, LIDC's positions match only to rounding in places); its
   inclusion outlines filled and its holes removed, slice by slice; the mark's centre is the
   centroid of those voxels in world millimetres, its diameter the largest equivalent-circle
   diameter over its slices.
2. **Group the marks of the readers** into physical nodules: the two groups whose centres lie
   closest are merged while that distance is at most `group_mm` (or half the larger mark's
   diameter, for large nodules) and no reader would then have two marks in one group (a
   reader's own marks are distinct nodules by definition). Pylidc groups by a distance
   threshold too; this rule uses centroids, and says which tolerance.
3. **Label** each nodule from the malignancy ratings of the readers who rated it (1-5; 0 or
   blank is no rating): by default their median, 1-2 benign, 4-5 malignant, 3 indeterminate
   and left out; fewer than `min_readers` readers, or every mark under 3 mm, leaves it out too.

Every nodule left out is counted by reason; every file that cannot be used says why. The
readers' ratings go with each nodule (the features an ideal observer would use); their
free-text nodule ids do not.
"""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from orchestrator.data.nodules import NoduleRow
from orchestrator.data.samples import Outcome
from orchestrator.data.volumes import volume_series_uid

CHARACTERISTICS = ("subtlety", "internalStructure", "calcification", "sphericity", "margin", "lobulation",
                   "spiculation", "texture", "malignancy")
# Why a nodule is left out (the ingest report counts each)
INDETERMINATE, SMALL, FEW_READERS, NO_SLICE = "indeterminate", "under_3mm", "too_few_readers", "no_matching_slice"


class LidcXmlError(Exception):
    """An annotation file that cannot be used as a whole (it does not parse, or names no series)."""


@dataclass(frozen=True)
class Roi:
    z: float  # imageZposition, mm
    sop_uid: str
    inclusion: bool  # an outline to fill (True) or a hole (False)
    points: tuple[tuple[float, float], ...]  # (x, y) = (column, row) in pixels


@dataclass(frozen=True)
class Mark:
    """One reader's mark of one nodule."""
    reader: int  # the reading session's index in its file
    ratings: dict[str, int]  # characteristic -> 1-5 (ratings that are 0 or blank are left out)
    rois: tuple[Roi, ...]

    @property
    def small(self) -> bool:
        """Under 3 mm: LIDC gives such nodules one point and no characteristics."""
        return not self.ratings and all(len(r.points) <= 1 for r in self.rois)


@dataclass
class LidcFile:
    path: str  # relative to the data folder
    series_uid: str
    marks: list[Mark]
    non_nodules: int


@dataclass
class PlacedMark:
    mark: Mark
    centre_ijk: np.ndarray  # continuous (i, j, k) in the series
    centre_mm: np.ndarray  # world, LPS
    diameter_mm: float


@dataclass
class LidcNodule:
    """One physical nodule: the readers' marks of it, grouped."""
    series_uid: str
    source: str  # the annotation file
    marks: list[PlacedMark] = field(default_factory=list)
    label: int | None = None
    left_out: str = ""  # why it has no label: one of the reasons above

    @property
    def centre_ijk(self) -> np.ndarray:
        return np.mean([m.centre_ijk for m in self.marks], axis=0)

    @property
    def centre_mm(self) -> np.ndarray:
        return np.mean([m.centre_mm for m in self.marks], axis=0)

    @property
    def diameter_mm(self) -> float:
        return float(np.mean([m.diameter_mm for m in self.marks]))

    def features(self) -> dict:
        """What the readers said of it, without identifiers: per reader its ratings, and the agreement."""
        return {"readers": len(self.marks), "ratings": [m.mark.ratings for m in self.marks],
                "diameter_mm": round(self.diameter_mm, 2)}


@dataclass(frozen=True)
class LabelRule:
    """How ratings become a label (DataConfig's lidc_* settings)."""
    statistic: str = "median"  # "median" or "mean" of the readers' malignancy
    benign_max: float = 2.0  # at or below: benign
    malignant_min: float = 4.0  # at or above: malignant; between the two: indeterminate
    min_readers: int = 1  # readers who rated it, at least
    group_mm: float = 5.0  # marks whose centres lie closer are one nodule (see the module's docstring)
    z_tolerance_mm: float = 0.5  # an roi's z position matches a slice within this

    @classmethod
    def of(cls, cfg) -> LabelRule:
        """The rule a DataConfig's lidc_* settings give."""
        return cls(cfg.lidc_label, cfg.lidc_benign_max, cfg.lidc_malignant_min, cfg.lidc_min_readers,
                   cfg.lidc_group_mm, cfg.lidc_z_tolerance_mm)

    def label(self, ratings: list[int]) -> tuple[int | None, str]:
        if len(ratings) < self.min_readers:
            return None, FEW_READERS
        value = float(np.median(ratings) if self.statistic == "median" else np.mean(ratings))
        if value <= self.benign_max:
            return 0, ""
        if value >= self.malignant_min:
            return 1, ""
        return None, INDETERMINATE


def annotation_kind(path: Path) -> str:
    """"lidc" for a LIDC reader-annotation file (its root element is LidcReadMessage), "broken" for an .xml
    that does not parse (an annotation file read_lidc_xml will report, where LIDC files are about), else ""."""
    if path.suffix.lower() != ".xml":
        return ""
    try:
        for _, element in ET.iterparse(path, events=("start",)):
            return "lidc" if _local(element.tag) == "LidcReadMessage" else ""
    except ET.ParseError:
        return "broken"
    return ""


def read_lidc_xml(path: Path, rel: str) -> LidcFile:
    """The marks of one annotation file; LidcXmlError saying why it cannot be used."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise LidcXmlError(f"does not parse as XML ({err})") from None
    series_uid = _text(_first(root, "ResponseHeader"), "SeriesInstanceUid")
    if not series_uid:
        raise LidcXmlError("its ResponseHeader names no SeriesInstanceUid")
    marks, non_nodules = [], 0
    for reader, session in enumerate(_children(root, "readingSession")):
        non_nodules += len(_children(session, "nonNodule"))
        for nodule in _children(session, "unblindedReadNodule"):
            rois = tuple(_roi(roi) for roi in _children(nodule, "roi"))
            if rois:
                marks.append(Mark(reader, _ratings(_first(nodule, "characteristics")), rois))
    return LidcFile(rel, series_uid, marks, non_nodules)


def place_mark(mark: Mark, volume, z_tolerance_mm: float) -> PlacedMark:
    """A mark in `volume` (orchestrator.data.series.Volume); ValueError when an roi finds no slice."""
    rows, columns = volume.values.shape[1:]
    pixel_area = volume.geometry.spacing[0] * volume.geometry.spacing[1]
    voxels, diameters = [], []
    for k, rois in _rois_by_slice(mark, volume, z_tolerance_mm).items():
        mask = _fill(rois, rows, columns)
        j, i = np.nonzero(mask)
        if len(i) == 0:
            continue
        voxels.append(np.stack([i, j, np.full(len(i), k)], axis=1))
        diameters.append(2 * math.sqrt(len(i) * pixel_area / math.pi))
    ijk = np.concatenate(voxels).mean(axis=0).astype(float)
    return PlacedMark(mark, ijk, volume.geometry.to_world(ijk), max(diameters))


def group_marks(placed: list[PlacedMark], series_uid: str, source: str, rule: LabelRule) -> list[LidcNodule]:
    """The readers' marks of one series grouped into nodules (the module's docstring, step 2)."""
    groups = [LidcNodule(series_uid, source, [m]) for m in placed]
    while True:
        pairs = [(float(np.linalg.norm(a.centre_mm - b.centre_mm)), n, m)
                 for n, a in enumerate(groups) for m, b in enumerate(groups) if n < m
                 and not {p.mark.reader for p in a.marks} & {p.mark.reader for p in b.marks}]
        close = [(d, n, m) for d, n, m in pairs
                 if d <= max(rule.group_mm, max(groups[n].diameter_mm, groups[m].diameter_mm) / 2)]
        if not close:
            return groups
        _, n, m = min(close)
        groups[n].marks += groups.pop(m).marks


def label_nodules(nodules: list[LidcNodule], rule: LabelRule) -> None:
    """Each nodule's label, or the reason it is left out (the module's docstring, step 3)."""
    for nodule in nodules:
        if all(m.mark.small for m in nodule.marks):
            nodule.left_out = SMALL
            continue
        ratings = [m.mark.ratings["malignancy"] for m in nodule.marks if "malignancy" in m.mark.ratings]
        nodule.label, nodule.left_out = rule.label(ratings)


def read_lidc(annotations: dict[str, Path], volumes: list, rule: LabelRule
              ) -> tuple[list[LidcNodule], list[str], list[Outcome]]:
    """Every annotation file (relative path -> path) placed in the series it names among `volumes`: its
    nodules grouped and labelled, in file order; what could not be placed (a reader's mark on no slice),
    said by file; each file's outcome."""
    by_series = {v.series_uid or volume_series_uid(Path(v.key)): v for v in volumes}
    nodules, unplaced, outcomes = [], [], []
    for rel, path in sorted(annotations.items()):
        try:
            found = read_lidc_xml(path, rel)
        except LidcXmlError as err:
            outcomes.append(Outcome(rel, "rejected", "bad_annotation", str(err)))
            continue
        volume = by_series.get(found.series_uid)
        if volume is None:
            outcomes.append(Outcome(rel, "rejected", "no_series", "names a series that is not among the accepted "
                                    "ones (missing, or rejected: see its files' reasons)"))
            continue
        placed, missed = [], []
        for mark in found.marks:
            try:
                placed.append(place_mark(mark, volume, rule.z_tolerance_mm))
            except ValueError as err:
                missed.append(f"a reader's mark in {rel}: {err}")
        found_nodules = group_marks(placed, found.series_uid, rel, rule)
        label_nodules(found_nodules, rule)
        nodules += found_nodules
        unplaced += missed
        counts = Counter(n.left_out or "labelled" for n in found_nodules)
        outcomes.append(Outcome(rel, "accepted", detail=(
            f"{len(found.marks)} reader mark(s) -> {len(found_nodules)} nodule(s): "
            + ", ".join(f"{n} {what}" for what, n in sorted(counts.items()))
            + (f"; {len(missed)} mark(s) on no slice" if missed else "")
            + (f"; {found.non_nodules} non-nodule mark(s) not used" if found.non_nodules else ""))))
    return nodules, unplaced, outcomes


def nodule_rows(nodules: list[LidcNodule], unplaced: list[str], rule: LabelRule) -> tuple[list[NoduleRow], list[dict]]:
    """The labelled nodules as nodule rows (numbered in order), and a report entry for each nodule left out
    and each mark that found no slice."""
    rows, report = [], []
    for number, nodule in enumerate(nodules, start=1):
        if nodule.left_out:
            report.append({"row": number, "status": nodule.left_out, "reason": _why_left_out(nodule, rule)})
            continue
        i, j, k = nodule.centre_ijk
        rows.append(NoduleRow(row=number, label=nodule.label, form="voxel", key_column="series_uid",
                              key=nodule.series_uid, place=(float(k), float(j), float(i)),
                              diameter_mm=nodule.diameter_mm, patient_id="", nodule_id="", modality="ct",
                              features=nodule.features()))
    report += [{"row": len(nodules) + n, "status": NO_SLICE, "reason": why} for n, why in enumerate(unplaced, 1)]
    return rows, report


def luna16_labels(rows: list[NoduleRow], nodules: list[LidcNodule], rule: LabelRule
                  ) -> tuple[list[NoduleRow], list[dict]]:
    """LUNA16's annotations.csv (world centres, no labels) labelled by the LIDC-IDRI nodule each row lies
    on: the nearest in its series within `group_mm` (or half the larger diameter). A row whose nodule the
    rule leaves out, or that no reader marked, is reported instead."""
    labelled, report = [], []
    for row in rows:
        if row.label is not None:
            labelled.append(row)
            continue
        near = sorted(((float(np.linalg.norm(n.centre_mm - np.asarray(row.place))), n)
                       for n in nodules if n.series_uid == row.key and row.form == "world"), key=lambda dn: dn[0])
        reach = [n for d, n in near if d <= max(rule.group_mm, max(n.diameter_mm, row.diameter_mm or 0) / 2)]
        if not reach:
            report.append({"row": row.row, "status": "no_lidc_nodule", "reason": "no LIDC-IDRI reader's nodule "
                           f"lies within {rule.group_mm:g} mm (or half its diameter) of this row in its series"})
        elif reach[0].left_out:
            report.append({"row": row.row, "status": reach[0].left_out, "reason": _why_left_out(reach[0], rule)})
        else:
            labelled.append(replace(row, label=reach[0].label, features=reach[0].features()))
    return labelled, report


def _why_left_out(nodule: LidcNodule, rule: LabelRule) -> str:
    ratings = [m.mark.ratings["malignancy"] for m in nodule.marks if "malignancy" in m.mark.ratings]
    if nodule.left_out == SMALL:
        return f"under 3 mm: {len(nodule.marks)} reader(s) marked it with a point, unrated"
    if nodule.left_out == FEW_READERS:
        return f"{len(ratings)} reader(s) rated it, fewer than lidc_min_readers = {rule.min_readers}"
    return (f"the {rule.statistic} malignancy of {sorted(ratings)} lies between {rule.benign_max:g} (benign) and "
            f"{rule.malignant_min:g} (malignant)")


# --- reading the XML ------------------------------------------------------------------------------

def _local(tag: str) -> str:
    """A tag without its namespace: LIDC's files carry xmlns="http://www.nih.gov"."""
    return tag.rsplit("}", 1)[-1]


def _children(element: ET.Element | None, name: str) -> list[ET.Element]:
    return [] if element is None else [c for c in element if _local(c.tag) == name]


def _first(element: ET.Element | None, name: str) -> ET.Element | None:
    found = _children(element, name)
    return found[0] if found else None


def _text(element: ET.Element | None, name: str) -> str:
    found = _first(element, name)
    return (found.text or "").strip() if found is not None else ""


def _ratings(characteristics: ET.Element | None) -> dict[str, int]:
    ratings = {}
    for name in CHARACTERISTICS:
        raw = _text(characteristics, name)
        if raw.isdigit() and 1 <= int(raw) <= 6:  # calcification runs to 6; 0 or blank: not rated
            ratings[name] = int(raw)
    return ratings


def _roi(roi: ET.Element) -> Roi:
    points = tuple((float(_text(p, "xCoord")), float(_text(p, "yCoord"))) for p in _children(roi, "edgeMap"))
    z = _text(roi, "imageZposition")
    return Roi(float(z) if z else math.nan, _text(roi, "imageSOP_UID"),
               _text(roi, "inclusion").upper() != "FALSE", points)


# --- placing a mark in its series --------------------------------------------------------------------

def _rois_by_slice(mark: Mark, volume, z_tolerance_mm: float) -> dict[int, list[Roi]]:
    """Each roi's slice index: by SOP Instance UID, else by z position within the rule's tolerance."""
    slice_z = np.array([volume.geometry.to_world((0, 0, k))[2] for k in range(volume.values.shape[0])])
    by_slice: dict[int, list[Roi]] = {}
    for roi in mark.rois:
        if roi.sop_uid and roi.sop_uid in volume.slice_uids:
            k = volume.slice_uids.index(roi.sop_uid)
        else:
            k = int(np.argmin(np.abs(slice_z - roi.z))) if not math.isnan(roi.z) else -1
            if k < 0 or abs(slice_z[k] - roi.z) > z_tolerance_mm:
                raise ValueError(f"an outline at z = {roi.z} mm matches no slice of the series within "
                                 f"{z_tolerance_mm} mm, nor names one by its SOP Instance UID")
        by_slice.setdefault(k, []).append(roi)
    return by_slice


def _fill(rois: list[Roi], rows: int, columns: int) -> np.ndarray:
    """One slice's mask: inclusion outlines filled (boundary included, as LIDC's outlines trace the
    nodule's edge pixels), then holes removed (their boundary stays nodule)."""
    include, exclude = Image.new("1", (columns, rows), 0), Image.new("1", (columns, rows), 0)
    for roi in rois:
        target = include if roi.inclusion else exclude
        points = [(x, y) for x, y in roi.points]
        if len(points) == 1:
            ImageDraw.Draw(target).point(points, fill=1)
        elif points:
            ImageDraw.Draw(target).polygon(points, fill=1, outline=1 if roi.inclusion else 0)
    return np.asarray(include, bool) & ~np.asarray(exclude, bool)
