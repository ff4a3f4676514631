"""Implicit shapes evaluated on (crops of) the phantom grid.

Every shape returns a *normalised radius* field: < 1 inside, 1 on the surface, growing outside.
Adding a smooth random field to it deforms the surface smoothly, which is how organ and tumour
shapes vary per case.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np


def rotation(rx_deg: float = 0.0, ry_deg: float = 0.0, rz_deg: float = 0.0) -> np.ndarray:
    """3x3 rotation (x, then y, then z axis), angles in degrees."""
    ax, ay, az = np.deg2rad([rx_deg, ry_deg, rz_deg])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def ellipsoid(x: np.ndarray, y: np.ndarray, z: np.ndarray, centre: Sequence[float],
              semi_axes: Sequence[float], rot: np.ndarray = None) -> np.ndarray:
    """Normalised radius of an ellipsoid with the given centre / semi-axes (mm) and rotation."""
    dx, dy, dz = x - np.float32(centre[0]), y - np.float32(centre[1]), z - np.float32(centre[2])
    if rot is not None:
        r = rot.astype(np.float32)
        # local coordinates = R^T (p - c)
        dx, dy, dz = (r[0, 0] * dx + r[1, 0] * dy + r[2, 0] * dz,
                      r[0, 1] * dx + r[1, 1] * dy + r[2, 1] * dz,
                      r[0, 2] * dx + r[1, 2] * dy + r[2, 2] * dz)
    a, b, c = (np.float32(s) for s in semi_axes)
    return np.sqrt((dx / a) ** 2 + (dy / b) ** 2 + (dz / c) ** 2)


def tube(x: np.ndarray, y: np.ndarray, z: np.ndarray, points: Sequence[Sequence[float]],
         radii: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
    """Normalised radius of a tube along a polyline with linearly varying radius (mm), and the
    arc-length parameter in [0, 1] of the closest point (used e.g. to vary wall thickness)."""
    pts = np.asarray(points, dtype=np.float32)
    rad = np.asarray(radii, dtype=np.float32)
    seg_len = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg_len)]) / max(float(seg_len.sum()), 1e-6)
    best = np.full(x.shape, np.inf, dtype=np.float32)
    best_t = np.zeros(x.shape, dtype=np.float32)
    for k in range(len(pts) - 1):
        p, q = pts[k], pts[k + 1]
        d = q - p
        dd = float(d @ d) + 1e-6
        t = ((x - p[0]) * d[0] + (y - p[1]) * d[1] + (z - p[2]) * d[2]) / np.float32(dd)
        np.clip(t, 0.0, 1.0, out=t)
        dist = np.sqrt((x - p[0] - t * d[0]) ** 2 + (y - p[1] - t * d[1]) ** 2 + (z - p[2] - t * d[2]) ** 2)
        r = rad[k] + t * (rad[k + 1] - rad[k])
        n = dist / r
        closer = n < best
        best = np.where(closer, n, best)
        best_t = np.where(closer, np.float32(cum[k]) + t * np.float32(cum[k + 1] - cum[k]), best_t)
    return best, best_t


def bbox_of_points(points: Sequence[Sequence[float]], margin: float) -> Tuple[np.ndarray, np.ndarray]:
    pts = np.asarray(points, dtype=np.float64)
    return pts.min(axis=0) - margin, pts.max(axis=0) + margin
