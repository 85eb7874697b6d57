"""Regenerate ``shoal_server/data/world_outline.json``, the continent outline of the status page map.

Input: ``land-110m.json`` from the npm package world-atlas 2.0.2 (Natural Earth 1:110m land,
public domain; TopoJSON by Mike Bostock, ISC). Output: rings of [longitude, latitude] pairs,
simplified (Douglas-Peucker) and rounded so the file stays small; Antarctica and tiny islands
are left out because no cache lives there. Run by hand; nothing downloads at run time:

    npm pack world-atlas@2.0.2 && tar xzf world-atlas-2.0.2.tgz
    python tools/make_world_outline.py package/land-110m.json shoal_server/data/world_outline.json
"""
from __future__ import annotations

import json
import sys
from typing import List, Sequence, Tuple

Point = Tuple[float, float]
TOLERANCE_DEG = 0.6     # simplification tolerance
MIN_AREA_DEG2 = 1.5     # rings smaller than this (in square degrees) are dropped
SOUTH_LIMIT = -60.0     # rings entirely south of this (Antarctica) are dropped


def decode_arcs(topo: dict) -> List[List[Point]]:
    """Undo TopoJSON quantisation and delta encoding."""
    (sx, sy), (tx, ty) = topo["transform"]["scale"], topo["transform"]["translate"]
    arcs = []
    for arc in topo["arcs"]:
        x = y = 0
        points = []
        for dx, dy in arc:
            x, y = x + dx, y + dy
            points.append((x * sx + tx, y * sy + ty))
        arcs.append(points)
    return arcs


def ring_points(arcs: List[List[Point]], indices: Sequence[int]) -> List[Point]:
    points: List[Point] = []
    for index in indices:
        arc = arcs[index] if index >= 0 else arcs[~index][::-1]
        points.extend(arc[1:] if points else arc)
    return points


def simplify(points: List[Point], tolerance: float) -> List[Point]:
    """Douglas-Peucker on an open polyline (iterative, keeps both ends)."""
    if len(points) < 3:
        return points
    keep = [False] * len(points)
    keep[0] = keep[-1] = True
    stack = [(0, len(points) - 1)]
    while stack:
        first, last = stack.pop()
        (x1, y1), (x2, y2) = points[first], points[last]
        dx, dy = x2 - x1, y2 - y1
        norm = (dx * dx + dy * dy) ** 0.5
        best, index = 0.0, -1
        for i in range(first + 1, last):
            px, py = points[i]
            if norm == 0:
                dist = ((px - x1) ** 2 + (py - y1) ** 2) ** 0.5
            else:
                dist = abs(dy * px - dx * py + x2 * y1 - y2 * x1) / norm
            if dist > best:
                best, index = dist, i
        if best > tolerance:
            keep[index] = True
            stack.extend([(first, index), (index, last)])
    return [p for p, k in zip(points, keep) if k]


def unwrap(points: List[Point]) -> List[Point]:
    """Make longitudes continuous (a ring crossing 180 deg goes on past it instead of jumping back)."""
    out = [points[0]]
    for x, y in points[1:]:
        previous = out[-1][0]
        while x - previous > 180:
            x -= 360
        while previous - x > 180:
            x += 360
        out.append((x, y))
    return out


def area(points: Sequence[Point]) -> float:
    return abs(sum(x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in zip(points, points[1:] + points[:1]))) / 2


def main(src: str, dst: str) -> int:
    with open(src, encoding="utf-8") as handle:
        topo = json.load(handle)
    arcs = decode_arcs(topo)
    rings = []
    for geometry in topo["objects"]["land"]["geometries"]:
        polygons = geometry["arcs"] if geometry["type"] == "MultiPolygon" else [geometry["arcs"]]
        for polygon in polygons:
            outer = ring_points(arcs, polygon[0])
            if max(lat for _, lat in outer) < SOUTH_LIMIT or area(outer) < MIN_AREA_DEG2:
                continue
            # Split at the ring's westernmost point so simplification keeps a closed shape.
            start = min(range(len(outer)), key=lambda i: outer[i][0])
            opened = outer[start:] + outer[1:start + 1]
            slim = simplify(unwrap(opened), TOLERANCE_DEG)
            if len(slim) >= 4:
                ring = slim[:-1]
                rings.append([[round(x, 1), round(y, 1)] for x, y in ring])
                west, east = min(x for x, _ in ring), max(x for x, _ in ring)
                if east > 180 or west < -180:   # crosses the antimeridian: draw it on both edges
                    shift = -360 if east > 180 else 360
                    rings.append([[round(x + shift, 1), round(y, 1)] for x, y in ring])
    data = {"source": "Natural Earth 1:110m land (public domain) via world-atlas 2.0.2, simplified "
                      f"{TOLERANCE_DEG} deg, rings >= {MIN_AREA_DEG2} deg2, north of {SOUTH_LIMIT} deg",
            "rings": rings}
    with open(dst, "w", encoding="utf-8") as handle:
        json.dump(data, handle, separators=(",", ":"))
        handle.write("\n")
    print(f"{len(rings)} rings, {sum(len(r) for r in rings)} points -> {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
