"""LIDC-IDRI reader-annotation XML, written in the collection's schema for the tests.

Outlines are traced from the painted balls by this file's own arithmetic (pixel = projection of the
world point on the slice's row and column directions), not by the code under test.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

NAMESPACE = "http://www.nih.gov"


@dataclass
class ReaderMark:
    """What one radiologist drew of one ball painted in a series."""
    centre_mm: tuple[float, float, float]
    radius_mm: float
    malignancy: int | None  # None: the characteristics block is left blank (0)
    jitter_px: float = 0.5  # each outline point moved by up to this much
    hole_mm: float = 0.0  # a hole of this radius around the centre (an exclusion outline)
    by_z_only: bool = False  # name the slices by imageZposition only (no matching SOP UID)
    z_offset_mm: float = 0.0  # added to every imageZposition (rounding, or a slice that is not there)
    small: bool = False  # under 3 mm: one point on the central slice, no characteristics
    extra: dict = field(default_factory=dict)  # other characteristics, e.g. {"spiculation": 4}


def pixel(series, point_mm) -> tuple[float, float]:
    """(x, y) = (column, row) of a world point in the series' slices."""
    offset = np.asarray(point_mm, float) - series.origin
    return float(offset @ series.row / series.spacing[0]), float(offset @ series.column / series.spacing[1])


def _outline(series, centre, radius_mm: float, k: int, jitter: float, rng) -> list[tuple[float, float]]:
    """The circle where slice k cuts the ball, as pixel points (empty when it does not)."""
    depth = (series.position(k) - np.asarray(centre)) @ series.normal
    if abs(depth) >= radius_mm:
        return []
    r = math.sqrt(radius_mm**2 - depth**2)
    x0, y0 = pixel(series, np.asarray(centre) + depth * series.normal)
    n = max(8, int(2 * math.pi * r / min(series.spacing[:2])))
    angles = np.linspace(0, 2 * math.pi, n, endpoint=False)
    return [(x0 + r * math.cos(a) / series.spacing[0] + rng.uniform(-jitter, jitter),
             y0 + r * math.sin(a) / series.spacing[1] + rng.uniform(-jitter, jitter)) for a in angles]


def _roi(series, k: int, points, inclusion: bool, mark: ReaderMark) -> str:
    z = series.position(k)[2] + mark.z_offset_mm
    sop = "" if mark.by_z_only else series.sop_uids[k]
    edges = "".join(f"<edgeMap><xCoord>{round(x)}</xCoord><yCoord>{round(y)}</yCoord></edgeMap>" for x, y in points)
    return (f"<roi><imageZposition>{z:.3f}</imageZposition><imageSOP_UID>{sop}</imageSOP_UID>"
            f"<inclusion>{'TRUE' if inclusion else 'FALSE'}</inclusion>{edges}</roi>")


def _nodule(series, mark: ReaderMark, number: int, rng) -> str:
    if mark.small:
        k = int(round((np.asarray(mark.centre_mm) - series.origin) @ series.normal / series.spacing[2]))
        rois = _roi(series, k, [pixel(series, mark.centre_mm)], True, mark)
        characteristics = ""
    else:
        rois = ""
        for k in range(series.shape[0]):
            outline = _outline(series, mark.centre_mm, mark.radius_mm, k, mark.jitter_px, rng)
            if outline:
                rois += _roi(series, k, outline, True, mark)
                if mark.hole_mm:
                    hole = _outline(series, mark.centre_mm, mark.hole_mm, k, 0.0, rng)
                    rois += _roi(series, k, hole, False, mark) if hole else ""
        ratings = {"subtlety": 4, "internalStructure": 1, "calcification": 6, "sphericity": 4, "margin": 4,
                   "lobulation": 2, "spiculation": 1, "texture": 5, **mark.extra,
                   "malignancy": mark.malignancy if mark.malignancy is not None else 0}
        characteristics = "<characteristics>" + "".join(f"<{k}>{v}</{k}>" for k, v in ratings.items()) + \
                          "</characteristics>"
    return f"<unblindedReadNodule><noduleID>Nodule {number:03d}</noduleID>{characteristics}{rois}</unblindedReadNodule>"


def write_lidc_xml(path: Path, series, readers: list[list[ReaderMark]], seed: int = 0,
                   non_nodules: int = 1) -> Path:
    """One LidcReadMessage: a reading session per reader, each with its marks and `non_nodules` nonNodule marks."""
    rng = np.random.default_rng(seed)
    sessions = ""
    for reader, marks in enumerate(readers):
        nodules = "".join(_nodule(series, m, n + 1, rng) for n, m in enumerate(marks))
        x, y = pixel(series, series.origin + 5)
        others = "".join(f"<nonNodule><nonNoduleID>{reader}-{n}</nonNoduleID><imageZposition>"
                         f"{series.position(0)[2]:.3f}</imageZposition><imageSOP_UID>{series.sop_uids[0]}"
                         f"</imageSOP_UID><locus><xCoord>{round(x)}</xCoord><yCoord>{round(y)}</yCoord></locus>"
                         f"</nonNodule>" for n in range(non_nodules))
        sessions += (f"<readingSession><annotationVersion>3.12</annotationVersion>"
                     f"<servicingRadiologistID>{escape(f'reader-{reader}')}</servicingRadiologistID>"
                     f"{nodules}{others}</readingSession>")
    text = (f'<?xml version="1.0" encoding="UTF-8"?>\n<LidcReadMessage uid="1.3.6.1.4.1.14519.5.2.1.6279" '
            f'xmlns="{NAMESPACE}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
            f"<ResponseHeader><Version>1.8.1</Version><MessageId>-421198203</MessageId>"
            f"<DateRequest>2007-11-01</DateRequest><TimeRequest>12:30:51</TimeRequest>"
            f"<RequestingSite>removed</RequestingSite><ServicingSite>removed</ServicingSite>"
            f"<TaskDescription>Second unblinded read</TaskDescription><CtImageFile>removed</CtImageFile>"
            f"<SeriesInstanceUid>{series.series_uid}</SeriesInstanceUid><DateService>2007-11-01</DateService>"
            f"<TimeService>12:30:51</TimeService><ResponseDescription>1 - Reading complete</ResponseDescription>"
            f"<StudyInstanceUID>{series.study_uid}</StudyInstanceUID></ResponseHeader>"
            f"{sessions}</LidcReadMessage>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
