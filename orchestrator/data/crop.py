"""Model inputs from physical values: nodule-centred crops at a fixed physical scale, or whole slices.

A crop is `data.roi_mm` square, centred on the nodule, resampled in plane to
`data.pixel_mm` (by default roi_mm / size, so no second resize), on the slice nearest the
centre and every slice within `data.slab_mm` of it. Because sizes are in millimetres, PET
at 4 mm and CT at 0.7 mm give crops of the same anatomy. Where a crop runs past the image
it is padded with the modality's background value, and the padded share is recorded.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from PIL import Image as PILImage
from scipy import ndimage

from orchestrator.config import DataConfig
from orchestrator.data.modalities import MODALITIES, Scale
from orchestrator.data.nodules import NoduleRow
from orchestrator.data.series import Volume


class OutsideVolume(ValueError):
    """A nodule row whose position is not inside the image it names."""


@dataclass(frozen=True)
class Crop:
    image: np.ndarray  # float32 (size, size) in [0, 1]
    slice_index: int
    offset_mm: float  # signed distance of this slice from the nodule centre, along the slice normal
    padded: float  # share of the crop that lay outside the image
    norm: str
    norm_note: str


def nodule_centre(row: NoduleRow, volume: Volume) -> np.ndarray:
    """Continuous (i, j, k) of the nodule in `volume`; OutsideVolume when it is not inside."""
    if row.form == "world":
        centre = volume.geometry.to_index(row.place)
    elif row.form == "voxel":
        slice_ref, j, i = row.place
        k = volume.slice_uids.index(slice_ref) if isinstance(slice_ref, str) and slice_ref in volume.slice_uids \
            else slice_ref
        if isinstance(k, str):
            raise OutsideVolume(f"slice {k!r} is not a SOP Instance UID of this series")
        centre = np.array([i, j, k], float)
    else:  # box on one slice, named by its SOP Instance UID or its file
        x_min, y_min, x_max, y_max = row.place
        names = volume.slice_uids if row.key_column == "sop_uid" else volume.slice_files
        centre = np.array([(x_min + x_max) / 2, (y_min + y_max) / 2, names.index(row.key)], float)
    extent = np.array(volume.values.shape[::-1]) - 0.5
    if np.any(centre < -0.5) or np.any(centre > extent):
        raise OutsideVolume(f"the nodule's voxel position {np.round(centre, 1).tolist()} (i, j, k) lies outside "
                            f"the image ({volume.values.shape[2]} x {volume.values.shape[1]} x "
                            f"{volume.values.shape[0]} voxels)")
    return centre


def slab_slices(centre_k: float, slices: int, step_mm: float, slab_mm: float) -> list[int]:
    """The slice nearest the centre and every slice within `slab_mm` of it."""
    nearest = int(np.clip(np.rint(centre_k), 0, slices - 1))
    within = [k for k in range(slices) if abs(k - centre_k) * step_mm <= slab_mm]
    return sorted(set(within) | {nearest})


def nodule_crops(volume: Volume, centre: np.ndarray, cfg: DataConfig) -> list[Crop]:
    """One crop per slice of the nodule's slab, each `cfg.size` px."""
    modality = MODALITIES[cfg.modality]
    scale = replace(volume.scale, reference=(float(volume.values.min()), float(volume.values.max())))
    crops = []
    for k in slab_slices(centre[2], len(volume.values), volume.geometry.spacing[2], cfg.slab_mm):
        values, padded = resample_square(volume.values[k], centre[:2], volume.geometry.spacing[:2], cfg,
                                         modality.background)
        image, norm, note = modality.normalise(values, scale, cfg)
        crops.append(Crop(image=image, slice_index=k, offset_mm=float((k - centre[2]) * volume.geometry.spacing[2]),
                          padded=padded, norm=norm, norm_note=note))
    return crops


def resample_square(values: np.ndarray, centre_ij: np.ndarray, spacing_ij: tuple[float, float], cfg: DataConfig,
                    background: float) -> tuple[np.ndarray, float]:
    """`cfg.roi_mm` square around `centre_ij` at `cfg.pixel_mm`, then `cfg.size` px; (values, padded share)."""
    pixel_mm = cfg.pixel_mm or cfg.roi_mm / cfg.size
    side = max(int(round(cfg.roi_mm / pixel_mm)), 1)
    offsets = (np.arange(side) - (side - 1) / 2) * pixel_mm
    i = centre_ij[0] + offsets[None, :] / spacing_ij[0]
    j = centre_ij[1] + offsets[:, None] / spacing_ij[1]
    j, i = np.broadcast_arrays(j, i)
    # Shrinking aliases: blur first, with skimage's anti-aliasing rule sigma = (factor - 1) / 2.
    sigma = [max(0.0, (pixel_mm / spacing_ij[1] - 1) / 2), max(0.0, (pixel_mm / spacing_ij[0] - 1) / 2)]
    source = ndimage.gaussian_filter(values, sigma) if max(sigma) > 0 else values
    out = ndimage.map_coordinates(source, [j, i], order=1, mode="constant", cval=background)
    rows, cols = values.shape
    outside = (i < -0.5) | (i > cols - 0.5) | (j < -0.5) | (j > rows - 0.5)
    if side != cfg.size:
        out = np.asarray(PILImage.fromarray(out.astype(np.float32)).resize((cfg.size, cfg.size), PILImage.BILINEAR))
    return out.astype(np.float32), float(outside.mean())


def whole_slice(values: np.ndarray, scale: Scale, cfg: DataConfig) -> tuple[np.ndarray, str, str]:
    """A slice that is already the nodule's: normalised, padded square with 0, resized to `cfg.size`."""
    image, norm, note = MODALITIES[cfg.modality].normalise(values, scale, cfg)
    return _resize_square(image, cfg.size), norm, note


def _resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Pad to a square with 0 (background after normalisation), then resize (antialiased)."""
    h, w = image.shape
    side = max(h, w)
    if h != w:
        padded = np.zeros((side, side), np.float32)
        top, left = (side - h) // 2, (side - w) // 2
        padded[top:top + h, left:left + w] = image
        image = padded
    if side != size:
        # Pillow's bilinear resize widens its kernel when shrinking, so it does not alias.
        image = np.asarray(PILImage.fromarray(image.astype(np.float32)).resize((size, size), PILImage.BILINEAR))
    return np.clip(image, 0.0, 1.0).astype(np.float32)
