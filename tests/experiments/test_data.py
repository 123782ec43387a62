"""Dataset loaders on small files made here, and the synthetic graphs."""
import json
import pickle

import numpy as np
import pytest
import scipy.sparse
import torch

from iexact.experiments.cli import main
from iexact.experiments.data import DatasetFilesMissing, contextual_sbm, load_dataset, num_classes, parse_synthetic


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

    parts = {"x": rng.random((labelled, features)), "y": one_hot(labelled),
             "allx": rng.random((total, features)), "ally": one_hot(total),
             "tx": rng.random((tests, features)), "ty": one_hot(tests),
             "graph": {i: [int(j) for j in rng.integers(0, total + tests, 3)] for i in range(total + tests)}}
    for part, value in parts.items():
        with open(folder / f"ind.{name}.{part}", "wb") as file:
            pickle.dump(value, file)
    (folder / f"ind.{name}.test.index").write_text("".join(f"{total + i}\n" for i in range(tests)))
    return total + tests


def test_planetoid_files_load_offline(tmp_path):
    nodes = _planetoid_files(tmp_path / "PubMed" / "raw", "pubmed")
    data = load_dataset("PubMed", tmp_path, download=False)
    assert data.num_nodes == nodes and data.x.shape[1] == 6 and num_classes(data) == 3
    assert int(data.train_mask.sum()) == 20 and int(data.test_mask.sum()) == 50


def _graphsaint_files(folder, multilabel):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    nodes = 40
    adjacency = scipy.sparse.random(nodes, nodes, density=0.1, format="csr", random_state=0)
    np.savez(folder / "adj_full.npz", data=adjacency.data, indices=adjacency.indices,
             indptr=adjacency.indptr, shape=adjacency.shape)
    np.save(folder / "feats.npy", rng.random((nodes, 5)).astype(np.float32))
    labels = {str(i): ([int(v) for v in rng.integers(0, 2, 4)] if multilabel else int(rng.integers(0, 3)))
              for i in range(nodes)}
    (folder / "class_map.json").write_text(json.dumps(labels))
    (folder / "role.json").write_text(json.dumps({"tr": list(range(20)), "va": list(range(20, 30)),
                                                  "te": list(range(30, 40))}))


def test_flickr_format_loads_offline(tmp_path):
    _graphsaint_files(tmp_path / "Flickr" / "raw", multilabel=False)
    data = load_dataset("flickr", tmp_path, download=False)
    assert data.x.shape == (40, 5) and int(data.val_mask.sum()) == 10


def test_yelp_is_multilabel_and_trains(tmp_path, capsys):
    _graphsaint_files(tmp_path / "Yelp" / "raw", multilabel=True)
    data = load_dataset("yelp", tmp_path, download=False)
    assert data.y.shape == (40, 4) and num_classes(data) == 4
    path = tmp_path / "yelp.json"
    assert main(["train", "--dataset", "yelp", "--root", str(tmp_path), "--offline", "--epochs", "3",
                 "--hidden", "8", "--quiet", "--json", str(path)]) == 0
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
