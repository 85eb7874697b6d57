"""A spatial index over unit vectors: rows bucketed by cell, each cell bounded by a cap; pure, no I/O.

Ranking's cost is w * angle / pi + (1 - w) * load term, and the load term is never negative, so
w * (smallest angle a cell's members can have to the client) / pi bounds the cost of every member
from below. Cells are visited cheapest bound first and the search stops at the first cell whose
bound exceeds the n-th best cost found so far (ranking.py); the index only has to say, for a
client, how close each cell can be.
"""
from __future__ import annotations

import math

import numpy as np

# Radians added to every cap radius: arccos near 1 errs by ~1.5e-8 in float64, and the bound
# must hold for the angles ranking computes, not only for the true ones.
ANGLE_SLACK = 1e-6


def cube_cells(x: np.ndarray, y: np.ndarray, z: np.ndarray, grid: int) -> np.ndarray:
    """The cell of each unit vector on a cube map: 6 faces of ``grid`` x ``grid`` cells each.

    Cube faces give cells of similar area everywhere (a latitude/longitude grid crowds the poles).
    """
    n = len(x)
    comps = np.stack([x, y, z])
    mags = np.abs(comps)
    axis = np.argmax(mags, axis=0)
    ar = np.arange(n)
    major = mags[axis, ar]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = comps[(axis + 1) % 3, ar] / major
        v = comps[(axis + 2) % 3, ar] / major
    face = axis * 2 + (comps[axis, ar] < 0)
    i = np.clip(np.nan_to_num((u + 1.0) * (grid / 2.0)), 0, grid - 1).astype(np.int64)
    j = np.clip(np.nan_to_num((v + 1.0) * (grid / 2.0)), 0, grid - 1).astype(np.int64)
    return (face.astype(np.int64) * grid + i) * grid + j


class SphereIndex:
    """Rows ``0 .. size-1`` grouped by cell; cell c holds ``order[start[c]:start[c + 1]]``.

    Each non-empty cell has a centre (the normalised mean of its members) and a radius (the
    largest angle from the centre to a member, as computed here, plus ANGLE_SLACK). Unplaced
    rows, if any, form the last cell, at angle pi from every client. Immutable once built; about
    4 bytes per row (``order``) plus 40 bytes per non-empty cell.
    """

    __slots__ = ("size", "order", "start", "cx", "cy", "cz", "radius", "unplaced")

    def __init__(self, size: int, order: np.ndarray, start: np.ndarray, centre: np.ndarray,
                 radius: np.ndarray, unplaced: bool) -> None:
        self.size, self.order, self.start = size, order, start
        self.cx, self.cy, self.cz = centre
        self.radius, self.unplaced = radius, unplaced

    @classmethod
    def build(cls, x: np.ndarray, y: np.ndarray, z: np.ndarray, placed: np.ndarray,
              per_cell: int = 64) -> "SphereIndex":
        """Index the rows of these columns (copies the caller need not keep stable afterwards)."""
        size = len(x)
        grid = max(1, int(math.sqrt(size / (6.0 * per_cell))))
        key = cube_cells(x, y, z, grid)
        key[~placed] = 6 * grid * grid          # after every real cell
        order = np.argsort(key, kind="stable")
        sorted_key = key[order]
        if size:
            firsts = np.flatnonzero(np.concatenate(([True], sorted_key[1:] != sorted_key[:-1])))
        else:
            firsts = np.zeros(0, dtype=np.int64)
        start = np.append(firsts, size).astype(np.int64)
        lens = np.diff(start)
        unplaced = bool(size) and bool(sorted_key[-1] == 6 * grid * grid)
        xs, ys, zs = x[order], y[order], z[order]
        if size:
            sx, sy, sz = (np.add.reduceat(a, firsts) for a in (xs, ys, zs))
        else:
            sx = sy = sz = np.zeros(0)
        norm = np.sqrt(sx * sx + sy * sy + sz * sz)
        if unplaced:
            norm[-1], sx[-1] = 1.0, 1.0        # any unit vector: the cell's bound is pi regardless
        cx, cy, cz = sx / norm, sy / norm, sz / norm
        member = np.repeat(np.arange(len(lens)), lens)
        dot = xs * cx[member] + ys * cy[member] + zs * cz[member]
        np.clip(dot, -1.0, 1.0, out=dot)
        angle = np.arccos(dot)
        radius = np.maximum.reduceat(angle, firsts) + ANGLE_SLACK if size else np.zeros(0)
        index_type = np.int32 if size < 2 ** 31 else np.int64
        return cls(size, order.astype(index_type), start, np.stack([cx, cy, cz]), radius, unplaced)

    def __len__(self) -> int:
        """The number of non-empty cells."""
        return len(self.radius)

    def min_angles(self, u: tuple) -> np.ndarray:
        """Per cell, an angle no member is closer than to the unit vector ``u`` (pi for unplaced)."""
        dot = self.cx * u[0]
        dot += self.cy * u[1]
        dot += self.cz * u[2]
        np.clip(dot, -1.0, 1.0, out=dot)
        angle = np.arccos(dot, out=dot)
        angle -= self.radius
        np.maximum(angle, 0.0, out=angle)
        if self.unplaced:
            angle[-1] = math.pi
        return angle

    def rows(self, cells: np.ndarray) -> np.ndarray:
        """The rows of the given cells, cell after cell."""
        first = self.start[cells]
        lens = self.start[cells + 1] - first
        total = int(lens.sum())
        if not total:
            return np.zeros(0, dtype=np.int64)
        shift = np.repeat(first - (np.cumsum(lens) - lens), lens)
        return self.order[np.arange(total) + shift].astype(np.int64)

    def counts(self) -> np.ndarray:
        return np.diff(self.start)

    def nbytes(self) -> int:
        """Memory the index holds."""
        return int(self.order.nbytes + self.start.nbytes + 3 * self.cx.nbytes + self.radius.nbytes)
