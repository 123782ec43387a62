r"""Datasets: PyG / OGB loaders reading from a local root, and synthetic graphs.

Every loader returns a PyG ``Data`` with ``x``, ``edge_index``, ``y`` and
boolean ``train_mask`` / ``val_mask`` / ``test_mask``; ``num_classes`` is
:func:`num_classes` of it. Names (case-insensitive):

- ``cora``, ``citeseer``, ``pubmed`` (Planetoid), ``flickr``, ``reddit2``,
  ``yelp`` (multi-label) through PyG; ``ogbn-arxiv``, ``ogbn-products``
  through ``ogb`` (``pip install "iexact[ogb]"``). Files are read from
  ``root``; missing files are downloaded only when ``download=True``, and a
  failed or refused download raises :class:`DatasetFilesMissing` naming every
  file and where it goes. What loads is checked
  (:func:`~iexact.experiments.validation.check_dataset`); PyG's ``processed/``
  cache is rebuilt when the raw files changed since it was made, or when it
  cannot be read; a corrupt raw file, or a root PyG cannot write its cache
  in, raises :class:`~iexact.experiments.validation.DatasetError` naming it.
- ``synthetic`` (a small default), ``synthetic-arxiv``,
  ``synthetic-products`` (the shapes of the OGB graphs) and
  ``synthetic:N,E,D,C``: a contextual stochastic block model.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import torch
from torch_geometric.data import Data
from torch_geometric.utils import to_undirected

from .files import write_atomically, write_json_atomically
from .validation import DatasetError, check_dataset, raw_fingerprint

_PLANETOID = {"cora": "Cora", "citeseer": "CiteSeer", "pubmed": "PubMed"}
_GRAPHSAINT = {"flickr": "Flickr", "reddit2": "Reddit2", "yelp": "Yelp"}
_OGB = {"ogbn-arxiv": "ogbn_arxiv", "ogbn-products": "ogbn_products"}


@dataclasses.dataclass(frozen=True)
class SyntheticShape:
    """Nodes, undirected edges (each stored both ways), features and classes of a synthetic graph."""

    nodes: int
    edges: int
    features: int
    classes: int


SYNTHETIC_PRESETS = {
    "synthetic": SyntheticShape(10_000, 50_000, 64, 8),
    "synthetic-arxiv": SyntheticShape(169_343, 1_166_243, 128, 40),
    "synthetic-products": SyntheticShape(2_449_029, 61_859_140, 100, 47),
}
DATASETS = (*_PLANETOID, *_GRAPHSAINT, *_OGB, *SYNTHETIC_PRESETS, "synthetic:N,E,D,C")


class DatasetFilesMissing(FileNotFoundError):
    """A dataset's files are not under the root and could not be downloaded."""


GRAPH_LAYOUTS = ("edge_index", "csr")


def with_layout(data: Data, layout: str) -> Data:
    """``data`` with its graph as ``layout``: ``"edge_index"`` as loaded, or
    ``"csr"``, PyG's ``ToSparseTensor(layout=torch.sparse_csr)``: the
    transposed adjacency ``adj_t`` as a ``torch.sparse`` CSR tensor in place of
    ``edge_index``, so that PyG's convs aggregate with a sparse-dense product
    instead of gathering one message per edge (:math:`E \times F` floats).
    It is stored lean (:func:`compact_csr`): :math:`E` int32 column indices
    (PyG's convs and torch's sparse products take them), not the :math:`2E`
    int64 ones of the sorted edge index that ``ToSparseTensor``'s columns
    view, and no per-edge values for an unweighted graph."""
    if layout not in GRAPH_LAYOUTS:
        raise ValueError(f"unknown graph layout {layout!r}: expected one of {', '.join(GRAPH_LAYOUTS)}")
    if layout == "edge_index":
        return data
    from torch_geometric.transforms import ToSparseTensor

    data = ToSparseTensor(layout=torch.sparse_csr)(data)
    data.adj_t = compact_csr(data.adj_t)
    return data


def compact_csr(adj_t: torch.Tensor) -> torch.Tensor:
    """The CSR tensor ``adj_t`` stored lean: int32 row pointers and column
    indices where its sizes and edge count fit in int32, each in its own
    storage (not a view of a larger one), and the values of an unweighted
    graph (all equal) as one value expanded to every edge (stride 0), as
    PyG's ``SparseTensor`` keeps no values; ``adj_t`` itself where it is so already."""
    rows, columns, values = adj_t.crow_indices(), adj_t.col_indices(), adj_t.values()
    dtype = torch.int32 if max(*adj_t.shape, columns.numel()) < 2**31 else columns.dtype
    if values.numel() > 1 and values.stride(0) != 0 and bool((values == values[0]).all()):
        values = values[:1].clone().expand(values.numel())
    elif rows.dtype == columns.dtype == dtype and columns.untyped_storage().nbytes() == columns.nbytes:
        return adj_t  # lean already (a cache read back): no copy of its columns out of the file's mapping
    return _csr_tensor(rows.to(dtype), columns.to(dtype, copy=True), values, adj_t.shape)


def _csr_tensor(rows: torch.Tensor, columns: torch.Tensor, values: torch.Tensor, size) -> torch.Tensor:
    """``torch.sparse_csr_tensor`` from parts that are valid by construction (not
    checked again), without torch's notice that CSR support is in beta on every load."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(rows, columns, values, size, check_invariants=False)


CACHED_EDGES = 2**24  # synthetic graphs from this many edges are built once and cached under the root


def load_prepared(
    name: str, root: str | Path = "data", download: bool = True, seed: int = 0, layout: str = "edge_index"
) -> Data:
    """:func:`load_dataset` with its graph in ``layout`` (:func:`with_layout`).

    A synthetic graph of at least :data:`CACHED_EDGES` edges (``synthetic-products``
    takes minutes and 14 GiB to build) is built once and saved under
    ``root/synthetic/`` (atomically); later loads map that file
    (``torch.load(mmap=True)``), so they take seconds and only the memory the
    tensors themselves need. A root that cannot be written is only warned about.
    """
    path = synthetic_cache(name, root, seed, layout)
    if path is None:
        return with_layout(load_dataset(name, root, download, seed), layout)
    if path.is_file():
        return _read_cached(path)
    data = with_layout(load_dataset(name, root, download, seed), layout)
    try:
        _write_cached(path, data)
    except OSError as error:
        warnings.warn(f"could not cache {name} at {path} ({error}); it will be built again next time", stacklevel=2)
    return data


def synthetic_cache(name: str, root: str | Path, seed: int, layout: str) -> Path | None:
    """Where :func:`load_prepared` keeps the synthetic graph ``name`` (one of at
    least :data:`CACHED_EDGES` edges), or ``None`` for a graph it builds every time."""
    key = name.lower()
    if not key.startswith("synthetic") or parse_synthetic(key).edges < CACHED_EDGES:
        return None
    return Path(root) / "synthetic" / f"{key.replace(':', '_').replace(',', '-')}-seed{seed}-{layout}.pt"


def _write_cached(path: Path, data: Data) -> None:
    tensors = {key: data[key] for key in data.keys() if key != "adj_t"}
    if "adj_t" in data:
        adj_t = data.adj_t
        tensors.update(
            adj_crow=adj_t.crow_indices(),
            adj_col=adj_t.col_indices(),
            adj_values=adj_t.values(),
            adj_size=torch.tensor(adj_t.shape),
        )
    write_atomically(path, lambda file: torch.save(tensors, file))


def _read_cached(path: Path) -> Data:
    tensors = torch.load(path, mmap=True, weights_only=True)
    if "adj_crow" in tensors:
        size = tuple(tensors.pop("adj_size").tolist())
        tensors["adj_t"] = compact_csr(
            _csr_tensor(tensors.pop("adj_crow"), tensors.pop("adj_col"), tensors.pop("adj_values"), size)
        )
    return Data(**tensors)


def graph_of(data: Data):
    """The graph argument of ``model(x, graph)``: ``adj_t`` when the data has one, else ``edge_index``."""
    return data.adj_t if "adj_t" in data else data.edge_index


def num_classes(data: Data) -> int:
    """Classes (or labels, for multi-label ``y``) of ``data``."""
    return data.y.size(1) if data.y.dim() == 2 else int(data.y.max()) + 1


def is_multilabel(data: Data) -> bool:
    return data.y.dim() == 2


def load_dataset(name: str, root: str | Path = "data", download: bool = True, seed: int = 0) -> Data:
    """The dataset called ``name`` (see the module docstring), as one ``Data``.

    Args:
        name (str): dataset name.
        root (str or Path, optional): directory holding the datasets. (default: ``"data"``)
        download (bool, optional): fetch missing files. (default: :obj:`True`)
        seed (int, optional): seed of synthetic graphs. (default: :obj:`0`)

    Raises:
        ValueError: unknown name or malformed ``synthetic:N,E,D,C``.
        DatasetFilesMissing: files missing and not downloadable.
    """
    key = name.lower()
    root = Path(root)
    if key.startswith("synthetic"):
        return contextual_sbm(parse_synthetic(key), seed=seed)
    if key in _PLANETOID:
        from torch_geometric.datasets import Planetoid
        from torch_geometric.io.planetoid import read_file

        folder = _PLANETOID[key]
        parts = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")
        files = [f"ind.{key}.{part}" for part in parts]
        return _load_pyg(
            name,
            root / folder,
            files,
            download,
            lambda reload: Planetoid(str(root), folder, force_reload=reload)[0],
            lambda raw, file: read_file(str(raw), key, file.removeprefix(f"ind.{key}.")),
        )
    if key in _GRAPHSAINT:
        from torch_geometric import datasets

        folder = _GRAPHSAINT[key]
        files = ["adj_full.npz", "feats.npy", "class_map.json", "role.json"]
        return _load_pyg(
            name,
            root / folder,
            files,
            download,
            lambda reload: getattr(datasets, folder)(str(root / folder), force_reload=reload)[0],
        )
    if key in _OGB:
        return _load_ogb(key, root, download)
    raise ValueError(f"unknown dataset {name!r}: expected one of {', '.join(DATASETS)}")


def parse_synthetic(key: str) -> SyntheticShape:
    """The shape named by ``synthetic``, ``synthetic-arxiv``, ``synthetic-products`` or ``synthetic:N,E,D,C``."""
    if key in SYNTHETIC_PRESETS:
        return SYNTHETIC_PRESETS[key]
    problem = f"malformed synthetic dataset {key!r}: use synthetic:N,E,D,C with integers N >= 2, E >= 1, D >= 1, C >= 2"
    if not key.startswith("synthetic:"):
        raise ValueError(f"unknown dataset {key!r}: expected one of {', '.join(DATASETS)}")
    try:
        nodes, edges, features, classes = (int(part) for part in key.split(":", 1)[1].split(","))
    except ValueError:
        raise ValueError(problem) from None
    if nodes < 2 or edges < 1 or features < 1 or not 2 <= classes <= nodes:
        raise ValueError(problem)
    return SyntheticShape(nodes, edges, features, classes)


def contextual_sbm(shape: SyntheticShape, seed: int = 0, homophily: float = 0.5, feature_signal: float = 0.15) -> Data:
    r"""A contextual stochastic block model: classes are learnable from both
    features and structure.

    Each node gets a class :math:`y_i` uniformly; features are
    :math:`x_i = \mu_{y_i} + \varepsilon_i` with class means
    :math:`\mu_c \sim \mathcal N(0, s^2 I)` (:math:`s` = ``feature_signal``)
    and noise :math:`\varepsilon_i \sim \mathcal N(0, I)`; each of the
    ``shape.edges`` edges joins a uniform source to a node of the same class
    with probability ``homophily``, else to a uniform node, and is stored in
    both directions. Train / validation / test masks: a random 60 / 20 / 20 split.
    """
    generator = torch.Generator().manual_seed(seed)
    n, c = shape.nodes, shape.classes
    y = torch.randint(0, c, (n,), generator=generator)
    means = torch.randn(c, shape.features, generator=generator) * feature_signal
    x = torch.randn(n, shape.features, generator=generator)
    for start in range(0, n, 2**16):  # x += means[y], without an N x D temporary
        x[start : start + 2**16] += means[y[start : start + 2**16]]
    by_class = torch.argsort(y)
    counts = torch.bincount(y, minlength=c)
    starts = torch.cumsum(counts, 0) - counts
    src = torch.randint(0, n, (shape.edges,), generator=generator)
    offset = (torch.rand(shape.edges, generator=generator) * counts[y[src]]).long()
    same_class = by_class[starts[y[src]] + offset.clamp_(max=torch.clamp(counts[y[src]] - 1, min=0))]
    anywhere = torch.randint(0, n, (shape.edges,), generator=generator)
    dst = torch.where(torch.rand(shape.edges, generator=generator) < homophily, same_class, anywhere)
    edge_index = to_undirected(torch.stack([src, dst]), num_nodes=n)
    order = torch.randperm(n, generator=generator)
    train_end, val_end = int(0.6 * n), int(0.8 * n)
    masks = [torch.zeros(n, dtype=torch.bool) for _ in range(3)]
    for mask, part in zip(masks, (order[:train_end], order[train_end:val_end], order[val_end:]), strict=True):
        mask[part] = True
    return Data(x=x, edge_index=edge_index, y=y, train_mask=masks[0], val_mask=masks[1], test_mask=masks[2])


def _missing_message(name: str, folder: Path, files: list[str], reason: str) -> str:
    listing = "\n".join(f"  {folder / file}" for file in files)
    return (
        f"dataset {name!r}: {reason}. Put these files there (the same names as the "
        f"official release), or run with network access to download them:\n{listing}"
    )


def _require(name: str, folder: Path, files: list[str], download: bool) -> None:
    missing = [file for file in files if not (folder / file).is_file()]
    if missing and not download:
        raise DatasetFilesMissing(_missing_message(name, folder, missing, "files are missing and downloads are off"))


def _fetch(name: str, folder: Path, files: list[str], load):
    """Run ``load`` (which downloads what is missing); a failed download names the files."""
    missing = [file for file in files if not (folder / file).is_file()]
    if not missing:
        return load()
    try:
        return load()
    except OSError as error:  # URLError, timeouts, refused connections
        raise DatasetFilesMissing(_missing_message(name, folder, missing, f"download failed ({error})")) from error


_STAMP = "iexact-raw.json"  # in processed/: the raw files' fingerprint when the cache was made


def _load_pyg(name: str, folder: Path, files: list[str], download: bool, build, read_each=None) -> Data:
    """``build(force_reload)`` of a PyG dataset whose raw files are ``folder/raw/files``,
    checked. The ``processed/`` cache is rebuilt when the raw files' fingerprint
    differs from the one it was made from, or when loading it fails; a load
    that still fails is blamed on the first raw file ``read_each(raw, file)``
    cannot read, else on the raw folder."""
    raw, stamp = folder / "raw", folder / "processed" / _STAMP
    _require(name, raw, files, download)
    present = all((raw / file).is_file() for file in files)
    fingerprint = raw_fingerprint(raw, files) if present else None
    stale = fingerprint is not None and (folder / "processed").is_dir() and _read_stamp(stamp) != fingerprint
    try:
        try:
            data = _fetch(name, raw, files, lambda: build(_unstamped(stamp) if stale else False))
        except (DatasetFilesMissing, PermissionError):
            raise
        except Exception:  # a processed/ cache that cannot be read: rebuild it from the raw files once
            if stale:
                raise
            data = build(_unstamped(stamp))
    except PermissionError as error:
        raise DatasetError(
            f"dataset {name!r}: PyG writes its processed/ cache beside raw/ and cannot here "
            f"({error.strerror}: {error.filename}); copy {folder} to a writable --root"
        ) from None
    except DatasetFilesMissing:
        raise
    except Exception as error:
        raise DatasetError(
            f"dataset {name!r}: {_blame(raw, files, read_each)} is corrupt or truncated "
            f"({type(error).__name__}: {error}); replace it with the official file"
        ) from None
    check_dataset(name, data)
    if fingerprint is not None:
        try:
            write_json_atomically(stamp, fingerprint, indent=1)
        except OSError:
            pass  # a read-only cache is used as it is; it is checked again next time
    return data


def _unstamped(stamp: Path) -> bool:
    """Remove the fingerprint before the cache is rebuilt (a rebuild that fails
    must not leave the old one vouching for the new cache); ``True``."""
    try:
        stamp.unlink(missing_ok=True)
    except OSError:
        pass
    return True


def _read_stamp(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _blame(raw: Path, files: list[str], read_each) -> str:
    """The first raw file ``read_each(raw, file)`` cannot read on its own, or the raw folder."""
    for file in files if read_each is not None else []:
        try:
            read_each(raw, file)
        except Exception:  # what a damaged file raises depends on the damage
            return f"raw file {raw / file}"
    return f"one of the raw files in {raw}"


def _load_ogb(key: str, root: Path, download: bool) -> Data:
    try:
        from ogb.nodeproppred import PygNodePropPredDataset
    except ImportError:
        raise ImportError(f'dataset {key!r} needs the ogb package: pip install "iexact[ogb]"') from None
    folder = root / _OGB[key]
    if not folder.is_dir() and not download:
        raise DatasetFilesMissing(
            _missing_message(key, folder, ["raw/", "split/"], "the OGB folder is missing and downloads are off")
        )
    dataset = _fetch(
        key, folder, ["raw/"] if not folder.is_dir() else [], lambda: PygNodePropPredDataset(key, root=str(root))
    )
    data, split = dataset[0], dataset.get_idx_split()
    n = data.num_nodes
    masks = {}
    for part, field in (("train", "train_mask"), ("valid", "val_mask"), ("test", "test_mask")):
        masks[field] = torch.zeros(n, dtype=torch.bool)
        masks[field][split[part]] = True
    published = data.edge_index.size(1)
    edge_index = to_undirected(data.edge_index, num_nodes=n)
    data = Data(x=data.x, edge_index=edge_index, y=data.y.view(-1), **masks)
    check_dataset(key, data, published)
    return data
