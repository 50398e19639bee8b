"""Where a voxel lies in patient space: world (LPS millimetres) <-> voxel indices.

One convention for DICOM series and volume files alike, the one ITK and SimpleITK use:
index (i, j, k) = (column, row, slice), and world = origin + direction @ (spacing * index),
where the columns of `direction` are the unit vectors of the i, j and k axes. DICOM's
Image Orientation (Patient) gives the i axis (along a row) then the j axis (down a
column); its Pixel Spacing gives the row spacing (along j) first. MetaImage and NIfTI
through SimpleITK come in the same LPS frame, so LUNA16's world coordinates need no flip.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Geometry:
    origin: tuple[float, float, float]  # world position of the centre of voxel (0, 0, 0)
    spacing: tuple[float, float, float]  # mm between columns, rows, slices
    direction: tuple[tuple[float, ...], ...]  # 3 x 3; column n is the unit vector of index axis n

    def to_world(self, index: np.ndarray | tuple[float, float, float]) -> np.ndarray:
        return np.asarray(self.origin) + np.asarray(self.direction) @ (np.asarray(self.spacing) * np.asarray(index))

    def to_index(self, world: np.ndarray | tuple[float, float, float]) -> np.ndarray:
        """Continuous (i, j, k) of a world point; integers are voxel centres."""
        local = np.linalg.solve(np.asarray(self.direction), np.asarray(world, float) - np.asarray(self.origin))
        return local / np.asarray(self.spacing)

    def as_dict(self) -> dict[str, list[float]]:
        return {"origin": list(self.origin), "spacing": list(self.spacing),
                "direction": [list(column) for column in np.asarray(self.direction).T]}


def slice_axes(orientation: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit row (i), column (j) and normal (k = i x j) vectors of an Image Orientation (Patient)."""
    row, column = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    row, column = row / np.linalg.norm(row), column / np.linalg.norm(column)
    return row, column, np.cross(row, column)
