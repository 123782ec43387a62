"""Dataset loaders on small files made here, and the synthetic graphs."""

import json
import pickle

import numpy as np
import pytest
import scipy.sparse
import torch

from iexact.experiments.cli import main
from iexact.experiments.data import DatasetFilesMissing, contextual_sbm, load_dataset, num_classes, parse_synthetic
from iexact.experiments.validation import KNOWN, DatasetError, KnownShape, check_dataset


def test_synthetic_graph_shape_and_masks():
    data = load_dataset("synthetic:500,2000,8,5", seed=1)
    assert data.x.shape == (500, 8) and num_classes(data) == 5
    assert data.edge_index.shape[1] <= 4000 and data.edge_index.max() < 500
    masks = data.train_mask.int() + data.val_mask.int() + data.test_mask.int()
    assert torch.equal(masks, torch.ones(500, dtype=torch.int32))  # a partition
    assert torch.equal(load_dataset("synthetic:500,2000,8,5", seed=1).x, data.x)  # seeded


def test_synthetic_classes_follow_structure():
    data = contextual_sbm(parse_synthetic("synthetic:2000,10000,8,4"))
    src, dst = data.edge_index
    same = (data.y[src] == data.y[dst]).float().mean().item()
    assert same > 0.5  # homophily 0.5 plus chance 1/4 of the rest


def test_synthetic_presets():
    assert parse_synthetic("synthetic-arxiv").nodes == 169_343
    assert parse_synthetic("synthetic-products").edges == 61_859_140


def _planetoid_files(folder, name):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    labelled, total, tests, features, classes = 20, 600, 50, 6, 3

    def one_hot(count):
        return np.eye(classes)[rng.integers(0, classes, count)]

    parts = {
        "x": rng.random((labelled, features)),
        "y": one_hot(labelled),
        "allx": rng.random((total, features)),
        "ally": one_hot(total),
        "tx": rng.random((tests, features)),
        "ty": one_hot(tests),
        "graph": {i: [int(j) for j in rng.integers(0, total + tests, 3)] for i in range(total + tests)},
    }
    for part, value in parts.items():
        with open(folder / f"ind.{name}.{part}", "wb") as file:
            pickle.dump(value, file)
    (folder / f"ind.{name}.test.index").write_text("".join(f"{total + i}\n" for i in range(tests)))
    return total + tests


@pytest.fixture
def small_shapes(monkeypatch):
    """The generated files' shapes stand for the published ones, which the loader checks."""
    for name, shape in {
        "pubmed": KnownShape(650, 6, 3, None, (20, 500, 50)),  # edges: as many as the random lists give
        "flickr": KnownShape(40, 5, 3, None),
        "yelp": KnownShape(40, 5, 4, None),
    }.items():
        monkeypatch.setitem(KNOWN, name, shape)


def test_planetoid_files_load_offline(tmp_path, small_shapes):
    nodes = _planetoid_files(tmp_path / "PubMed" / "raw", "pubmed")
    data = load_dataset("PubMed", tmp_path, download=False)
    assert data.num_nodes == nodes and data.x.shape[1] == 6 and num_classes(data) == 3
    assert int(data.train_mask.sum()) == 20 and int(data.test_mask.sum()) == 50


def _graphsaint_files(folder, multilabel):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    nodes = 40
    adjacency = scipy.sparse.random(nodes, nodes, density=0.1, format="csr", random_state=0)
    np.savez(
        folder / "adj_full.npz",
        data=adjacency.data,
        indices=adjacency.indices,
        indptr=adjacency.indptr,
        shape=adjacency.shape,
    )
    np.save(folder / "feats.npy", rng.random((nodes, 5)).astype(np.float32))
    labels = {
        str(i): ([int(v) for v in rng.integers(0, 2, 4)] if multilabel else int(rng.integers(0, 3)))
        for i in range(nodes)
    }
    (folder / "class_map.json").write_text(json.dumps(labels))
    (folder / "role.json").write_text(
        json.dumps({"tr": list(range(20)), "va": list(range(20, 30)), "te": list(range(30, 40))})
    )


def test_flickr_format_loads_offline(tmp_path, small_shapes):
    _graphsaint_files(tmp_path / "Flickr" / "raw", multilabel=False)
    data = load_dataset("flickr", tmp_path, download=False)
    assert data.x.shape == (40, 5) and int(data.val_mask.sum()) == 10


def test_yelp_is_multilabel_and_trains(tmp_path, capsys, small_shapes):
    _graphsaint_files(tmp_path / "Yelp" / "raw", multilabel=True)
    data = load_dataset("yelp", tmp_path, download=False)
    assert data.y.shape == (40, 4) and num_classes(data) == 4
    path = tmp_path / "yelp.json"
    assert (
        main(
            [
                "train",
                "--dataset",
                "yelp",
                "--root",
                str(tmp_path),
                "--offline",
                "--epochs",
                "3",
                "--hidden",
                "8",
                "--quiet",
                "--json",
                str(path),
            ]
        )
        == 0
    )
    record = json.loads(path.read_text())
    assert record["dataset"] == "yelp" and len(record["test_accuracy"]["runs"]) == 1


def test_multilabel_score_is_micro_f1():
    from iexact.experiments.train import accuracy

    logits = torch.tensor([[2.0, -1.0, 3.0], [1.0, 1.0, -2.0], [-1.0, -1.0, -1.0]])
    labels = torch.tensor([[1, 1, 1], [0, 1, 0], [0, 0, 1]])
    everything = torch.ones(3, dtype=torch.bool)
    # predicted 4 labels, 5 true, 3 of them hit: F1 = 2 * 3 / (4 + 5)
    assert accuracy(logits, labels, everything) == pytest.approx(6 / 9)
    assert accuracy(logits, labels, torch.tensor([False, True, False])) == pytest.approx(2 * 1 / (2 + 1))


def test_missing_files_are_listed(tmp_path):
    with pytest.raises(DatasetFilesMissing) as info:
        load_dataset("cora", tmp_path, download=False)
    for part in ("x", "graph", "test.index"):
        assert str(tmp_path / "Cora" / "raw" / f"ind.cora.{part}") in str(info.value)


def test_ogb_without_the_package_says_what_to_install(tmp_path):
    try:
        import ogb  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r'pip install "iexact\[ogb\]"'):
            load_dataset("ogbn-arxiv", tmp_path, download=False)
    else:
        with pytest.raises(DatasetFilesMissing, match="ogbn_arxiv"):
            load_dataset("ogbn-arxiv", tmp_path, download=False)


@pytest.mark.parametrize("name", ["imagenet", "synthetic:1,2", "synthetic:10,5,3,1", "synthetic:a,b,c,d"])
def test_bad_names_raise(name):
    with pytest.raises(ValueError, match="dataset"):
        load_dataset(name)


def test_a_changed_raw_file_is_caught_and_the_cache_rebuilt(tmp_path, small_shapes, capsys):
    """A truncated test index loads without error in PyG: the split check refuses it,
    and once the file is restored the processed/ cache built from it is not reused."""
    _planetoid_files(tmp_path / "PubMed" / "raw", "pubmed")
    index = tmp_path / "PubMed" / "raw" / "ind.pubmed.test.index"
    assert int(load_dataset("PubMed", tmp_path, download=False).test_mask.sum()) == 50
    whole = index.read_text()
    index.write_text("".join(whole.splitlines(keepends=True)[:20]))
    with pytest.raises(DatasetError, match="splits of 20 / 500 / 20 nodes where PubMed has 20 / 500 / 50"):
        load_dataset("PubMed", tmp_path, download=False)
    argv = ["train", "--dataset", "pubmed", "--root", str(tmp_path), "--offline", "--epochs", "1", "--quiet"]
    assert main(argv) == 1
    assert capsys.readouterr().err.startswith("iexact train: error: dataset 'pubmed' does not hold what it should")
    index.write_text(whole)
    assert int(load_dataset("PubMed", tmp_path, download=False).test_mask.sum()) == 50


def test_a_corrupt_raw_file_is_named_and_a_corrupt_cache_rebuilt(tmp_path, small_shapes, capsys):
    raw = tmp_path / "PubMed" / "raw"
    _planetoid_files(raw, "pubmed")
    load_dataset("PubMed", tmp_path, download=False)
    (tmp_path / "PubMed" / "processed" / "data.pt").write_bytes(b"not a torch file")
    assert load_dataset("PubMed", tmp_path, download=False).num_nodes == 650
    features = raw / "ind.pubmed.allx"
    features.write_bytes(features.read_bytes()[:200])
    assert main(["train", "--dataset", "pubmed", "--root", str(tmp_path), "--offline", "--quiet"]) == 1
    error = capsys.readouterr().err
    assert f"raw file {features} is corrupt or truncated" in error and "Traceback" not in error


def test_a_root_pyg_cannot_write_in_is_one_line(tmp_path, small_shapes, capsys, monkeypatch):
    from torch_geometric.datasets import Planetoid

    _planetoid_files(tmp_path / "PubMed" / "raw", "pubmed")

    def refuse(self):
        raise PermissionError(13, "Permission denied", str(tmp_path / "PubMed" / "processed"))

    monkeypatch.setattr(Planetoid, "process", refuse)
    assert main(["train", "--dataset", "pubmed", "--root", str(tmp_path), "--offline", "--quiet"]) == 1
    error = capsys.readouterr().err
    assert "cannot here (Permission denied" in error and "copy" in error and "writable --root" in error


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: d.y.__setitem__(0, -3), "labels include -3, below 0"),
        (lambda d: d.val_mask.__setitem__(d.train_mask.nonzero()[0], True), "splits overlap"),
        (lambda d: d.edge_index.__setitem__((1, 0), 999), "edge_index holds node 999, outside 0..299"),
        (lambda d: d.x.__setitem__((2, 2), float("nan")), "features hold NaN or Inf"),
        (lambda d: setattr(d, "test_mask", d.test_mask.float()), "test_mask is torch.float32"),
    ],
)
def test_check_dataset_names_each_problem(damage, message):
    data = contextual_sbm(parse_synthetic("synthetic:300,1200,16,4"))
    check_dataset("synthetic", data)
    damage(data)
    with pytest.raises(DatasetError, match=message):
        check_dataset("synthetic", data)


def test_check_dataset_compares_published_shapes():
    data = contextual_sbm(parse_synthetic("synthetic:2708,5000,1433,7"))
    with pytest.raises(DatasetError, match="splits of 1,624 / 542 / 542 nodes where cora has 140 / 500 / 1,000"):
        check_dataset("cora", data)
    data.x = data.x[:, :100]
    with pytest.raises(DatasetError, match="100 features where cora has 1,433"):
        check_dataset("cora", data)


@pytest.fixture
def cora_copy(tmp_path):
    """Cora's raw files copied where a test may edit them."""
    import shutil

    from tests.integration.test_cora import SHARED_DATA

    raw = SHARED_DATA / "Cora" / "raw"
    if not raw.is_dir():
        pytest.skip(f"Cora is not at {raw}")
    shutil.copytree(raw, tmp_path / "Cora" / "raw")
    return tmp_path


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda graph: {node: [node] for node in graph},
            r"\b0 edges where cora has 10,556",
        ),
        (
            lambda graph: {node: ([] if node % 2 else near) for node, near in graph.items()},
            "edges where cora has 10,556",
        ),
    ],
    ids=["self-loops only", "half the adjacency lists"],
)
def test_a_published_graph_is_checked_for_its_edges(cora_copy, edit, message):
    """Cora's graph file edited: loaded and trained before, it is now refused, naming the edges."""
    path = cora_copy / "Cora" / "raw" / "ind.cora.graph"
    with open(path, "rb") as file:
        graph = pickle.load(file, encoding="latin1")
    with open(path, "wb") as file:
        pickle.dump(edit(graph), file)
    with pytest.raises(DatasetError, match=message):
        load_dataset("cora", cora_copy, download=False)


def test_the_published_cora_loads_with_its_edges(cora_copy):
    assert load_dataset("cora", cora_copy, download=False).num_edges == KNOWN["cora"].edges


def test_a_graph_of_self_loops_only_is_refused():
    data = contextual_sbm(parse_synthetic("synthetic:60,200,4,3"))
    data.edge_index = torch.arange(60).repeat(2, 1)
    with pytest.raises(DatasetError, match="every edge is a self-loop"):
        check_dataset("synthetic", data)
