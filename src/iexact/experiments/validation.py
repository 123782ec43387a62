r"""Loaded datasets checked before anything trains on them.

A truncated or edited raw file can load without error and still be wrong (a
test split of 20 nodes instead of 1,000). :func:`check_dataset` checks every
dataset for consistency (feature, label and mask shapes, labels in range,
disjoint non-empty splits, edge indices within the nodes) and the published
ones against their known shapes (:data:`KNOWN`); :func:`raw_fingerprint`
lets the loader notice raw files that changed under PyG's ``processed/`` cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import torch


class DatasetError(Exception):
    """A dataset that cannot be used: files that are corrupt or do not hold what
    they should (each problem named), or a root PyG cannot write its cache in."""


@dataclasses.dataclass(frozen=True)
class KnownShape:
    """The published shape of a dataset: nodes, features, classes (labels, for
    multi-label data), directed edges as its files hold them and, where the
    split is fixed, its train / validation / test sizes."""

    nodes: int
    features: int
    classes: int
    edges: int | None  # None: not checked
    split: tuple[int, int, int] | None = None


KNOWN = {  # edges as PyG reads the files (the OGB ones before iexact makes them undirected)
    "cora": KnownShape(2_708, 1_433, 7, 10_556, (140, 500, 1_000)),
    "citeseer": KnownShape(3_327, 3_703, 6, 9_104, (120, 500, 1_000)),
    "pubmed": KnownShape(19_717, 500, 3, 88_648, (60, 500, 1_000)),
    "flickr": KnownShape(89_250, 500, 7, 899_756),
    "reddit2": KnownShape(232_965, 602, 41, 23_213_838),
    "yelp": KnownShape(716_847, 300, 100, 13_954_819),
    "ogbn-arxiv": KnownShape(169_343, 128, 40, 1_166_243, (90_941, 29_799, 48_603)),
    "ogbn-products": KnownShape(2_449_029, 100, 47, 123_718_280, (196_615, 39_323, 2_213_091)),
}


def check_dataset(name: str, data, published_edges: int | None = None) -> None:
    """Raise :class:`DatasetError` naming every problem of ``data`` (see the module docstring):
    for a published dataset its edges too, ``published_edges`` of them as the
    files held them (default: ``data``'s own), and a graph of self-loops only.

    Reads every feature and edge once (``isfinite``, min and max): seconds on
    ogbn-products, nothing beside its training.
    """
    problems = _node_problems(data)
    sizes, split_problems = _split_problems(data)
    problems += split_problems + _edge_problems(data)
    known = KNOWN.get(name.lower())
    if known is not None:
        problems += _published_problems(name, known, data, sizes, published_edges)
    if problems:
        raise DatasetError(
            f"dataset {name!r} does not hold what it should: "
            + "; ".join(problems)
            + ". Its files are damaged or not the official release: replace them"
        )


def _node_problems(data) -> list[str]:
    """Features: floats, one row a node, finite; labels: one per node, none negative."""
    problems, n, x, y = [], data.num_nodes, data.x, data.y
    if x.dim() != 2 or x.size(0) != n or not x.is_floating_point():
        problems.append(f"features are {x.dtype} {tuple(x.shape)}, not floats of {n:,} rows")
    elif not bool(torch.isfinite(x).all()):
        problems.append("features hold NaN or Inf")
    if y.size(0) != n:
        problems.append(f"labels cover {y.size(0):,} nodes, not {n:,}")
    elif y.dim() == 1 and y.numel() and int(y.min()) < 0:
        problems.append(f"labels include {int(y.min())}, below 0")
    return problems


def _split_problems(data) -> tuple[list[int], list[str]]:
    """``(sizes, problems)`` of the three masks: boolean, one entry a node, not empty, disjoint."""
    problems, sizes, n = [], [], data.num_nodes
    for part in ("train_mask", "val_mask", "test_mask"):
        mask = data[part]
        if mask.dtype != torch.bool or mask.shape != (n,):
            problems.append(f"{part} is {mask.dtype} {tuple(mask.shape)}, not a boolean mask of {n:,} nodes")
            continue
        sizes.append(int(mask.sum()))
        if sizes[-1] == 0:
            problems.append(f"{part} selects no node")
    if len(sizes) == 3 and bool(
        (data.train_mask & (data.val_mask | data.test_mask)).any() | (data.val_mask & data.test_mask).any()
    ):
        problems.append("the train, validation and test splits overlap")
    return sizes, problems


def _edge_problems(data) -> list[str]:
    """An edge index of integers, within the nodes, not of self-loops only."""
    if "edge_index" not in data:
        return []
    edges, n = data.edge_index, data.num_nodes
    if edges.dim() != 2 or edges.size(0) != 2 or edges.is_floating_point():
        return [f"edge_index is {edges.dtype} {tuple(edges.shape)}, not integers of shape (2, E)"]
    if not edges.numel():
        return []
    problems = []
    low, high = int(edges.min()), int(edges.max())
    if low < 0 or high >= n:
        problems.append(f"edge_index holds node {low if low < 0 else high}, outside 0..{n - 1}")
    if not bool((edges[0] != edges[1]).any()):
        problems.append("every edge is a self-loop")
    return problems


def _published_problems(name: str, known: KnownShape, data, sizes: list[int], published_edges) -> list[str]:
    """What differs from the published shape: nodes, features, classes, edges, split sizes."""
    y = data.y
    classes = y.size(1) if y.dim() == 2 else (int(y.max()) + 1 if y.numel() else 0)
    edges = data.edge_index.size(1) if published_edges is None and "edge_index" in data else published_edges
    found = {"nodes": data.num_nodes, "features": data.x.size(-1), "classes": classes, "edges": edges}
    problems = [
        f"{value:,} {field} where {name} has {getattr(known, field):,}"
        for field, value in found.items()
        if getattr(known, field) is not None and value != getattr(known, field)
    ]
    if known.split is not None and len(sizes) == 3 and tuple(sizes) != known.split:
        problems.append(
            f"train / validation / test splits of {' / '.join(f'{s:,}' for s in sizes)} nodes "
            f"where {name} has {' / '.join(f'{s:,}' for s in known.split)}"
        )
    return problems


def raw_fingerprint(folder: Path, files: list[str]) -> dict[str, str]:
    """The SHA-256 of each raw file, by name."""
    fingerprint = {}
    for name in files:
        digest = hashlib.sha256()
        with open(folder / name, "rb") as file:
            for block in iter(lambda: file.read(2**20), b""):  # noqa: B023 (called at once)
                digest.update(block)
        fingerprint[name] = digest.hexdigest()
    return fingerprint
