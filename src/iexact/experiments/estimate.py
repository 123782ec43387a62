r"""What a run needs at least, known before anything is built, against what the machine has.

A graph too large for the machine otherwise ends with the kernel's OOM killer
and no message. From the shape alone (a synthetic graph's ``N, E, D, C``, or a
published dataset's nodes and features) :func:`least_bytes` adds up lower
bounds of what the process must hold at once; :func:`check_fits` refuses when
they exceed :func:`available_bytes`. Every part is a lower bound, so a run that
is refused could not have fitted; one that passes may still run out (then
``--memory-limit`` gives the one-line failure instead of the OOM killer).

Parts, for :math:`N` nodes, :math:`D` features, :math:`E'` directed edges,
hidden width :math:`H` and :math:`L` layers:

- features :math:`4ND`, graph :math:`16E'` (``edge_index``, int64; a cached
  ``--graph csr`` graph :math:`4E'`, its int32 column indices), labels and
  masks :math:`11N`;
- building a synthetic graph that is not cached: :math:`32E'` more
  (``to_undirected`` concatenates, then sorts a copy);
- FP32 activations: :math:`4NHL` (one saved tensor per layer; there are more);
- FP32 messages in full batch on ``edge_index``: :math:`4E'H` (PyG gathers
  one message per edge in a layer; the compressed convs chunk them).

:math:`E'` counts each synthetic edge both ways, less 10 % for the
duplicates ``to_undirected`` removes (fewer for the graphs iexact makes).
"""

from __future__ import annotations

import resource
from pathlib import Path

from ..memory import format_bytes
from .data import parse_synthetic, synthetic_cache
from .limits import process_memory
from .models import REFERENCE
from .validation import KNOWN


class NotEnoughMemory(Exception):
    """A run that cannot fit in the memory this process may use."""


def least_bytes(
    dataset: str,
    model: str,
    hidden: int | None,
    layers: int | None,
    compressed: bool,
    full_batch: bool,
    graph: str,
    root: str | Path,
    seed: int = 0,
) -> dict[str, int] | None:
    """Lower bounds, by part, of the bytes a run holds at its peak (see the module
    docstring); ``None`` for a dataset whose shape is not known beforehand.
    ``root``, ``seed`` and ``graph`` say whether a synthetic graph is cached
    (:func:`~iexact.experiments.data.synthetic_cache`), so that loading does not build it."""
    key = dataset.lower()
    reference = REFERENCE[model]
    hidden, layers = hidden or reference.hidden, layers or reference.layers
    if key.startswith("synthetic"):
        shape = parse_synthetic(key)
        nodes, features = shape.nodes, shape.features
        edges = int(0.9 * min(2 * shape.edges, nodes * (nodes - 1)))
        path = synthetic_cache(key, root, seed, graph)
        cached = path is not None and path.is_file()
    elif key in KNOWN:
        nodes, features, edges, cached = KNOWN[key].nodes, KNOWN[key].features, 0, True
    else:
        return None
    graph_bytes = 4 if graph == "csr" and cached else 16  # a cached CSR's int32 columns; else edge_index first
    parts = {"features": 4 * nodes * features, "graph": graph_bytes * edges, "labels_and_masks": 11 * nodes}
    if not cached:
        parts["building"] = 32 * edges
    if not compressed:
        parts["activations"] = 4 * nodes * hidden * layers
        if full_batch and graph == "edge_index":
            parts["messages"] = 4 * edges * hidden
    return parts


def available_bytes() -> tuple[int, str] | None:
    """What this process may still allocate, and why: the smaller of the
    machine's available memory (``MemAvailable``) and, under an address-space
    limit, the limit less what the process maps already; ``None`` where unknown."""
    candidates = []
    try:
        with open("/proc/meminfo") as file:
            fields = dict(line.split(":", 1) for line in file)
        candidates.append((int(fields["MemAvailable"].split()[0]) * 1024, "available on this machine"))
    except (OSError, KeyError, ValueError):
        pass
    limit, _ = resource.getrlimit(resource.RLIMIT_AS)
    mapped = process_memory()
    if limit != resource.RLIM_INFINITY and mapped is not None:
        candidates.append((max(limit - mapped[0], 0), f"left under the memory limit of {format_bytes(limit, 'GiB')}"))
    return min(candidates) if candidates else None


def check_fits(parts: dict[str, int] | None, what: str, hints: list[str] | None = None) -> None:
    """Raise :class:`NotEnoughMemory` when ``parts`` add up to more than
    :func:`available_bytes`, suggesting ``hints`` (by default what lowers the parts)."""
    available = available_bytes()
    if parts is None or available is None or sum(parts.values()) <= available[0]:
        return
    listing = ", ".join(
        f"{part.replace('_', ' ')} {format_bytes(nbytes)}" for part, nbytes in parts.items() if nbytes >= 2**17
    )
    if hints is None:
        hints = (
            (["a compressed --config"] if "activations" in parts else [])
            + (["--graph csr or --batch-size"] if "messages" in parts else [])
            + ["a machine with more memory"]
        )
    raise NotEnoughMemory(
        f"{what} needs at least {format_bytes(sum(parts.values()))} ({listing}) but "
        f"{format_bytes(available[0])} is {available[1]}: try {', '.join(hints)}"
    )
