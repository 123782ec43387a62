"""The memory estimate: a lower bound, checked before anything is built."""

import time

from iexact.experiments.cli import main


def test_a_dataset_beyond_the_memory_limit_is_refused_before_it_is_built(capsys):
    started = time.perf_counter()
    # a limit well above what the test process maps (2.1 GiB late in the suite), a graph far above the limit
    assert main(["train", "--dataset", "synthetic:30000000,1000,100,4", "--memory-limit", "8GiB", "--quiet"]) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "needs at least 11.48 GiB (features 11.18 GiB" in error[0]
    assert "left under the memory limit of 8.00 GiB" in error[0]
    assert time.perf_counter() - started < 10  # refused, not built (30M x 100 floats)


def test_the_estimate_is_a_lower_bound_of_what_is_held():
    from iexact.experiments.data import load_dataset
    from iexact.experiments.estimate import least_bytes

    data = load_dataset("synthetic:3000,20000,16,4")
    parts = least_bytes("synthetic:3000,20000,16,4", "sage", None, None, False, True, "edge_index", "data")
    assert parts["features"] == data.x.nbytes
    assert 0.9 * data.edge_index.nbytes <= parts["graph"] <= data.edge_index.nbytes
    assert parts["messages"] <= data.edge_index.size(1) * 128 * 4 and "building" in parts
    compressed = least_bytes("synthetic:3000,20000,16,4", "sage", None, None, True, True, "edge_index", "data")
    assert "activations" not in compressed and "messages" not in compressed
    assert least_bytes("my-own-graph", "sage", None, None, True, True, "edge_index", "data") is None


def test_the_estimate_of_a_cached_csr_graph_is_a_lower_bound(tmp_path, monkeypatch):
    from iexact.experiments import data as datasets
    from iexact.experiments.estimate import least_bytes

    monkeypatch.setattr(datasets, "CACHED_EDGES", 1000)
    adj_t = datasets.load_prepared("synthetic:3000,20000,16,4", tmp_path, layout="csr").adj_t
    parts = least_bytes("synthetic:3000,20000,16,4", "sage", None, None, True, True, "csr", tmp_path)
    held = sum(part.untyped_storage().nbytes() for part in (adj_t.crow_indices(), adj_t.col_indices(), adj_t.values()))
    assert "building" not in parts and 0.9 * adj_t.col_indices().nbytes <= parts["graph"] <= held
