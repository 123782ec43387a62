"""Mini-batch training through PyG's loaders: batches, shares per rank, the loss rows, and bad input."""

import json

import pytest
import torch_geometric.typing

from iexact.experiments.batching import Batching, batch_loss_rows, make_loader, set_epoch
from iexact.experiments.cli import main
from iexact.experiments.data import load_dataset

HAS_SAMPLER = torch_geometric.typing.WITH_PYG_LIB or torch_geometric.typing.WITH_TORCH_SPARSE
GRAPH = "synthetic:600,3000,16,4"
TINY = ["--dataset", GRAPH, "--epochs", "3", "--quiet", "--hidden", "16"]


@pytest.fixture(scope="module")
def data():
    return load_dataset(GRAPH)


def test_random_node_batches_partition_the_nodes(data):
    loader = make_loader(data, Batching(150, sampler="random-node"))
    batches = list(loader)
    assert len(batches) == 4 and sum(batch.num_nodes for batch in batches) == data.num_nodes
    rows = [batch_loss_rows(batch) for batch in batches]
    assert sum(row.numel() for row in rows) == int(data.train_mask.sum())
    assert all(bool(batch.train_mask[row].all()) for batch, row in zip(batches, rows, strict=True))


def test_ranks_draw_disjoint_equal_shares_that_reshuffle_each_epoch(data):
    loaders = [make_loader(data, Batching(100, sampler="random-node"), shards=(rank, 2), seed=7) for rank in (0, 1)]
    first, second = (list(loader.sampler) for loader in loaders)
    assert len(first) == len(second) == data.num_nodes // 2
    assert set(first).isdisjoint(second) and len(set(first) | set(second)) == data.num_nodes
    assert len(loaders[0]) == len(loaders[1]) == 3  # the same number of steps on every rank
    set_epoch(loaders[0], 1)
    assert list(loaders[0].sampler) != first


@pytest.mark.parametrize("model", ["gcn", "sage", "gcn2", "gat", "gatv2", "transformer"])
def test_every_reference_model_trains_on_random_node_batches(model, tmp_path):
    path = tmp_path / "out.json"
    argv = TINY + ["--model", model, "--batch-size", "200", "--sampler", "random-node", "--json", str(path)]
    if model == "gcn2":
        argv += ["--layers", "4"]
    assert main(["train"] + argv) == 0
    record = json.loads(path.read_text())
    assert record["batching"] == {"batch_size": 200, "fanout": None, "sampler": "random-node"}
    memory = record["activation_memory"]  # full precision: norm statistics, attention weights per edge and head
    # GAT's exact scores per node and head outweigh the rest of a 200-node batch
    assert (memory["compressed"] > memory["uncompressed"] or model == "gat") and memory["compressed"] > 0


def test_compressed_mini_batch_training_learns_like_fp32(tmp_path):
    """Same seed, same batches: the compressed model lands in FP32's accuracy band."""
    scores = {}
    for config in ("fp32", "default"):
        path = tmp_path / f"{config}.json"
        assert (
            main(
                [
                    "train",
                    "--dataset",
                    "synthetic:2000,10000,32,4",
                    "--epochs",
                    "15",
                    "--quiet",
                    "--batch-size",
                    "500",
                    "--sampler",
                    "random-node",
                    "--config",
                    config,
                    "--json",
                    str(path),
                ]
            )
            == 0
        )
        scores[config] = json.loads(path.read_text())
    fp32, compressed = (scores[name]["test_accuracy"]["mean"] for name in ("fp32", "default"))
    assert fp32 > 0.5 and abs(fp32 - compressed) < 0.05, (fp32, compressed)
    assert scores["fp32"]["activation_memory"]["total"] > 8 * scores["default"]["activation_memory"]["total"]


@pytest.mark.skipif(not HAS_SAMPLER, reason="NeighborLoader needs pyg-lib or torch-sparse")
def test_neighbor_batches_train_on_their_seed_nodes(data, tmp_path):
    loader = make_loader(data, Batching(64, (5, 3, 2)))
    batch = next(iter(loader))
    rows = batch_loss_rows(batch)
    assert rows.tolist() == list(range(64)) and bool(data.train_mask[batch.n_id[rows]].all())
    path = tmp_path / "out.json"
    assert main(["train"] + TINY + ["--batch-size", "64", "--fanout", "5,3,2", "--json", str(path)]) == 0
    assert json.loads(path.read_text())["batching"]["fanout"] == [5, 3, 2]


@pytest.mark.skipif(HAS_SAMPLER, reason="a sampling backend is installed")
def test_neighbor_sampler_without_a_backend_names_what_to_install(capsys):
    assert main(["train"] + TINY + ["--batch-size", "64", "--fanout", "5,3,2"]) == 1
    error = capsys.readouterr().err
    assert "pyg-lib or torch-sparse" in error and "--sampler random-node" in error


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--batch-size", "0"], "must be a positive integer"),
        (["--batch-size", "64", "--fanout", "5,x,2"], "comma-separated integers"),
        (["--batch-size", "64", "--fanout", "5,0,2"], "every count must be >= 1, or -1"),
        (["--batch-size", "64", "--fanout", "5,-3,2"], "every count must be >= 1, or -1"),
        (["--batch-size", "64", "--fanout", "5,3"], "has 2 hops but the model has 3"),
        (["--batch-size", "64"], "needs a fanout"),
        (["--batch-size", "64", "--sampler", "random-node", "--fanout", "5,3,2"], "neighbor sampler only"),
        (["--fanout", "5,3,2"], "need --batch-size"),
        (["--sampler", "kmeans"], "invalid choice"),
    ],
)
def test_bad_batching_is_refused_before_training(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train"] + TINY + argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_batching_round_trips_through_its_record():
    batching = Batching(32, (10, -1), "neighbor")
    assert Batching.from_dict(json.loads(json.dumps(batching.to_dict()))) == batching
    assert Batching.from_dict(None) is None
