"""Training under a memory limit, the peak's parts, the CSR layout and the cache of large synthetic graphs."""

import json
import mmap
import os
import subprocess
import sys

import numpy
import pytest
import torch

from iexact.experiments import data as datasets
from iexact.experiments import job as jobs
from iexact.experiments import limits
from iexact.experiments.cli import main
from iexact.experiments.limits import (
    is_out_of_memory,
    parse_bytes,
    peak_resident,
    process_memory,
    restart_peak_resident,
)
from iexact.experiments.measure import peak_memory, restart_peak_memory

# FP32 peaks at 3.0 GiB of address space here, the compressed run at 1.8 GiB (without torch-sparse mapped)
LIMITED = [
    "--dataset",
    "synthetic:300000,900000,32,4",
    "--epochs",
    "1",
    "--quiet",
    "--threads",
    "2",
    "--graph",
    "csr",
    "--memory-limit",
    "2.4GiB",
]


def _iexact(*args):
    """The command in a process of its own: the limit must not fall on the test process."""
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    return subprocess.run([sys.executable, "-m", "iexact", *args], env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(
    "text, expected", [("123", 123), ("8GiB", 8 * 2**30), ("1.5G", 3 * 2**29), ("500 MB", 500 * 10**6), ("2kib", 2048)]
)
def test_sizes_parse_with_their_units(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "eight", "8 parsecs", "0", "-1G"])
def test_sizes_that_are_not_sizes_are_refused(text):
    with pytest.raises(ValueError, match="size"):
        parse_bytes(text)


def test_allocation_failures_are_told_from_other_errors():
    assert is_out_of_memory(MemoryError()) and is_out_of_memory(
        RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes")
    )
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's peak resident set")
def _touched(nbytes: int) -> mmap.mmap:
    """An anonymous mapping of ``nbytes`` whose every page this thread has
    written: fresh pages whatever the allocator holds (a tensor this large may
    be served from memory an earlier test left resident), unmapped by ``close()``."""
    region = mmap.mmap(-1, nbytes)
    numpy.frombuffer(region, dtype=numpy.uint8).fill(1)  # in the calling thread
    return region


def test_the_peak_resident_set_restarts_after_loading():
    """A peak reached while loading is left out once restarted; what comes after is counted.
    Both regions are mapped for the test alone, so they take fresh pages and
    give them back. They are filled from this thread: pages a pool thread
    touches may reach the kernel's resident-set counters late (they are cached per thread)."""
    loaded = _touched(128 * 2**20)  # 128 MiB touched, then unmapped
    loaded.close()
    before = peak_resident()
    if not restart_peak_resident():
        pytest.skip("this kernel keeps the peak resident set through clear_refs (tested by the next test)")
    restarted = peak_resident()
    assert restarted <= before - 96 * 2**20
    # against what is resident just before: the kernel may reclaim cold pages after the restart
    resident = process_memory()[1]
    trained = _touched(96 * 2**20)
    assert peak_resident() >= resident + 64 * 2**20
    trained.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's clear_refs")
def test_a_reset_the_kernel_ignores_is_reported_as_no_reset(monkeypatch):
    """Some sandboxes accept the write to clear_refs and keep the old peak: the
    restart then says it did not happen, and the peak is labelled the process's whole life's."""
    status = {"VmHWM": 900 * 2**20, "VmRSS": 700 * 2**20}
    monkeypatch.setattr(limits, "_status_bytes", status.get)
    assert not restart_peak_resident()
    assert not restart_peak_memory(torch.device("cpu"))
    assert peak_memory(torch.device("cpu"), restarted=False)[1] == "cpu_peak_rss_process"
    status["VmHWM"] = status["VmRSS"] + 2**20  # a reset that took: the peak is what is resident now
    assert restart_peak_resident()


# end to end, 20 s: the refusals before training stay in the default run (test_estimate, the tests above)
@pytest.mark.slow
def test_under_a_limit_fp32_stops_with_one_line_and_compressed_trains(tmp_path):
    fp32 = _iexact("train", *LIMITED, "--config", "fp32")
    assert fp32.returncode == 1
    message = fp32.stderr.strip().splitlines()[-1]
    assert message.startswith("iexact train: error: out of memory under the limit of 2.40 GiB: allocating")
    assert "Traceback" not in fp32.stderr
    path = tmp_path / "compressed.json"
    compressed = _iexact("train", *LIMITED, "--json", str(path))
    assert compressed.returncode == 0, compressed.stderr[-2000:]
    record = json.loads(path.read_text())
    assert record["peak_memory"]["bytes"] < 2.4 * 2**30
    # its FP32 reference does not fit either: said so, not a crash
    assert "out_of_memory" in record["gradient_error"]


@pytest.mark.slow
def test_bench_records_the_configuration_that_ran_out_and_trains_the_rest(tmp_path):
    done = _iexact("bench", "train", *LIMITED, "--configs", "fp32,default", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    records = json.loads((tmp_path / "bench.json").read_text())
    assert [record["label"] for record in records] == ["FP32", "default"]
    assert "out of memory under the limit of 2.40 GiB" in records[0]["out_of_memory"]
    assert records[1]["test_accuracy"]["mean"] > 0
    table = (tmp_path / "bench.md").read_text()
    assert "| FP32 | out of memory under the limit of 2.40 GiB" in table and "memory limit 2.40 GiB" in table


def test_a_limit_below_what_the_interpreter_maps_is_refused():
    done = _iexact("train", "--dataset", "synthetic:300,1200,16,4", "--epochs", "1", "--memory-limit", "100MiB")
    assert done.returncode == 2 and "below the" in done.stderr and "already maps" in done.stderr


def test_the_csr_layout_trains_the_same_model(tmp_path):
    records = {}
    for layout in ("edge_index", "csr"):
        path = tmp_path / f"{layout}.json"
        assert (
            main(
                [
                    "train",
                    "--dataset",
                    "synthetic:300,1200,16,4",
                    "--epochs",
                    "3",
                    "--quiet",
                    "--config",
                    "fp32",
                    "--graph",
                    layout,
                    "--json",
                    str(path),
                ]
            )
            == 0
        )
        records[layout] = json.loads(path.read_text())
    # the same losses, so the same scores, epoch by epoch
    assert records["csr"]["val_accuracy"]["history"] == records["edge_index"]["val_accuracy"]["history"]
    edges = 1200 * 2  # at most, undirected
    assert records["csr"]["memory_parts"]["graph"] <= edges * (4 + 4) + 301 * 4  # int32 columns, float32 values


def test_csr_with_mini_batches_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(
            [
                "train",
                "--dataset",
                "synthetic:300,1200,16,4",
                "--graph",
                "csr",
                "--batch-size",
                "100",
                "--sampler",
                "random-node",
            ]
        )
    assert "--graph csr trains full batch" in capsys.readouterr().err


def test_large_synthetic_graphs_are_built_once_and_mapped_after(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "CACHED_EDGES", 1000)
    built = datasets.load_prepared("synthetic:500,2000,8,3", tmp_path, layout="csr")
    cached = list((tmp_path / "synthetic").glob("*.pt"))
    assert len(cached) == 1
    monkeypatch.setattr(datasets, "contextual_sbm", lambda *args, **kwargs: pytest.fail("built again"))
    again = datasets.load_prepared("synthetic:500,2000,8,3", tmp_path, layout="csr")
    assert torch.equal(again.x, built.x) and torch.equal(again.y, built.y)
    assert torch.equal(again.adj_t.to_dense(), built.adj_t.to_dense())
    assert torch.equal(again.train_mask, built.train_mask)
    assert again.adj_t.col_indices().dtype == again.adj_t.crow_indices().dtype == torch.int32
    assert datasets.compact_csr(again.adj_t) is again.adj_t  # lean already: its columns are not copied again


def test_a_graph_to_cache_is_built_outside_the_limit_then_trained_under_it(tmp_path, monkeypatch, capsys):
    """``train --memory-limit`` builds a missing cache in a child (here run in
    this process) with ``iexact datasets --prepare`` before lowering its own
    limit; a cached graph needs no child, and a child that fails stops the run."""
    monkeypatch.setattr(datasets, "CACHED_EDGES", 1000)
    events = []

    def child(command, check):
        assert command[:3] == [sys.executable, "-m", "iexact"] and not check
        events.append("build")
        return subprocess.CompletedProcess(command, main(command[3:]))

    monkeypatch.setattr(jobs.subprocess, "run", child)
    monkeypatch.setattr(jobs, "apply_memory_limit", lambda nbytes: events.append(nbytes))
    train = [
        "train",
        "--dataset",
        "synthetic:500,2000,8,3",
        "--root",
        str(tmp_path),
        "--graph",
        "csr",
        "--memory-limit",
        "8GiB",
        "--epochs",
        "1",
        "--quiet",
        "--hidden",
        "8",
    ]
    assert main(train) == 0
    assert events == ["build", 8 * 2**30]
    cached = tmp_path / "synthetic" / "synthetic_500-2000-8-3-seed0-csr.pt"
    assert cached.is_file() and f"cached at {cached}" in capsys.readouterr().out
    assert main(train) == 0 and events[2:] == [8 * 2**30]
    cached.unlink()
    monkeypatch.setattr(jobs.subprocess, "run", lambda command, check: subprocess.CompletedProcess(command, 1))
    assert main(train) == 1
    assert "building synthetic:500,2000,8,3 failed" in capsys.readouterr().err


def test_datasets_prepare_refuses_unknown_names(capsys):
    with pytest.raises(SystemExit):
        main(["datasets", "--prepare", "synthetic:3"])
    assert "malformed synthetic dataset" in capsys.readouterr().err


def test_a_csr_cache_with_int64_indices_is_read_with_int32_ones(tmp_path):
    adjacency = torch.tensor([[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=torch.float).to_sparse_csr()
    assert adjacency.col_indices().dtype == torch.int64
    torch.save(
        {
            "x": torch.ones(3, 2),
            "adj_crow": adjacency.crow_indices(),
            "adj_col": adjacency.col_indices(),
            "adj_values": adjacency.values(),
            "adj_size": torch.tensor(adjacency.shape),
        },
        tmp_path / "old.pt",
    )
    read = datasets._read_cached(tmp_path / "old.pt").adj_t
    assert read.col_indices().dtype == read.crow_indices().dtype == torch.int32
    assert torch.equal(read.to_dense(), adjacency.to_dense())
