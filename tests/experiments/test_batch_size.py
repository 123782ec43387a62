"""``iexact bench batch-size``: the largest batch within an activation budget, found and checked."""

import json

import pytest

from iexact.config import CompressionConfig
from iexact.experiments.batch_size import _cost, largest_batch
from iexact.experiments.batching import Batching
from iexact.experiments.cli import main
from iexact.experiments.data import load_dataset
from iexact.experiments.models import prepare_model
from iexact.experiments.settings import RunKind, Settings

DATASET = "synthetic:1200,6000,16,4"


def _settings(config):
    return Settings(
        dataset=DATASET,
        model="sage",
        kind=RunKind.FP32 if config is None else RunKind.COMPRESSED,
        label="x",
        config=config,
        hidden=32,
        batching=Batching(1, None, "random-node"),
    )


@pytest.mark.parametrize("config, budget", [(None, 2**19), (CompressionConfig(), 2**14)], ids=["fp32", "default"])
def test_the_batch_found_fits_and_a_larger_one_does_not(config, budget, device):
    data = load_dataset(DATASET, seed=0).to(device)
    settings = _settings(config)
    found = largest_batch("x", settings, data, device, budget, samples=2)
    model = prepare_model(settings, data, device)
    assert 0 < found.batch_size < found.limit == data.num_nodes
    assert (
        _cost(model, settings.batching, settings.seed, data, device, found.batch_size, 2)[0]
        == found.activation_bytes
        <= budget
    )
    larger = int(found.batch_size * 1.02) + 2
    assert _cost(model, settings.batching, settings.seed, data, device, larger, 2)[0] > budget


def test_compression_takes_larger_batches_and_a_tiny_budget_none(device):
    data = load_dataset(DATASET, seed=0).to(device)
    fp32 = largest_batch("fp32", _settings(None), data, device, 2**15)
    default = largest_batch("default", _settings(CompressionConfig()), data, device, 2**15)
    assert default.batch_size == default.limit and default.batch_size > 10 * fp32.batch_size
    assert largest_batch("fp32", _settings(None), data, device, 100).batch_size == 0


def test_bench_batch_size_prints_and_writes(tmp_path, capsys):
    out = tmp_path / "batches.json"
    assert (
        main(
            [
                "bench",
                "batch-size",
                "--dataset",
                DATASET,
                "--hidden",
                "32",
                "--sampler",
                "random-node",
                "--memory",
                "256KiB",
                "--samples",
                "1",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "| fp32 |" in printed and "| default | 1,200 (all) | ≥ " in printed
    records = json.loads(out.read_text())
    assert [record["label"] for record in records] == ["fp32", "default"]
    assert all(record["activation_bytes"] <= 256 * 1024 for record in records)
    with pytest.raises(SystemExit) as refused:
        main(["bench", "batch-size", "--dataset", DATASET, "--memory", "1MiB"])
    assert refused.value.code == 2 and "needs a fanout" in capsys.readouterr().err
