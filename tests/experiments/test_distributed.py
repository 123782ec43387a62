"""Data-parallel training: ``torchrun --nproc-per-node 2 -m iexact train`` on CPU ranks (gloo)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from iexact.experiments import distributed
from iexact.experiments.checkpoint import read_record
from iexact.experiments.cli import main
from iexact.experiments.distributed import Ranks

GRAPH = ["--dataset", "synthetic:2000,10000,32,4", "--quiet", "--threads", "1"]


def _torchrun(args, processes=2, **kwargs):
    """``torchrun --standalone`` (a free port of its own) with one thread per rank."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={processes}",
        "-m",
        "iexact",
        "train",
        *args,
    ]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, **kwargs)


def test_environment_is_read_as_torchrun_writes_it():
    assert distributed.ranks_from_environment({}) is None
    assert distributed.ranks_from_environment({"WORLD_SIZE": "1", "RANK": "0"}) is None
    assert distributed.ranks_from_environment({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"}) == Ranks(2, 4, 0)
    with pytest.raises(ValueError, match=r"RANK=4 must be in \[0, WORLD_SIZE=4\)"):
        distributed.ranks_from_environment({"WORLD_SIZE": "4", "RANK": "4"})
    with pytest.raises(ValueError, match="must be integers"):
        distributed.ranks_from_environment({"WORLD_SIZE": "two"})


def test_shares_of_training_nodes_are_equal_and_cover_them():
    mask = torch.zeros(20, dtype=torch.bool)
    mask[torch.tensor([1, 3, 4, 8, 9, 15, 19])] = True
    shares = [distributed.train_share(mask, Ranks(rank, 3, rank)) for rank in range(3)]
    assert all(share.numel() == 3 for share in shares)  # 7 nodes padded to 9, as DistributedSampler does
    assert set(torch.cat(shares).tolist()) == set(mask.nonzero().view(-1).tolist())
    with pytest.raises(ValueError, match="7 nodes cannot be shared by 8 ranks"):
        distributed.train_share(mask, Ranks(0, 8, 0))


def test_ranks_get_their_own_noise_and_rank_0_the_single_process_one():
    key = 123456789
    assert distributed.rank_key(key, 0) == key
    keys = {distributed.rank_key(key, rank) for rank in range(8)}
    assert len(keys) == 8 and all(0 <= k < 2**63 for k in keys)
    seeds = {distributed.epoch_seed(0, run, epoch, rank) for run in range(2) for epoch in range(3) for rank in range(2)}
    assert len(seeds) == 12


def test_two_ranks_stay_in_step_learn_as_one_process_and_resume_on_one(tmp_path):
    checkpoint, ddp_json, single_json = tmp_path / "ddp.pt", tmp_path / "ddp.json", tmp_path / "one.json"
    epochs = ["--epochs", "12"]
    done = _torchrun(GRAPH + epochs + ["--checkpoint", str(checkpoint), "--json", str(ddp_json)])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 processes (DistributedDataParallel)" in done.stdout
    record = json.loads(ddp_json.read_text())
    assert record["world_size"] == 2
    spread = record["rank_spread"][0]
    assert len(spread) == 12 and max(spread) <= 1e-6  # every epoch is one step in full batch
    assert main(["train"] + GRAPH + epochs + ["--json", str(single_json)]) == 0
    single = json.loads(single_json.read_text())
    assert abs(record["test_accuracy"]["mean"] - single["test_accuracy"]["mean"]) < 0.05
    assert single["test_accuracy"]["mean"] > 0.5
    assert not list(tmp_path.glob("*.tmp"))
    # the checkpoint rank 0 wrote resumes in a single process (any world size)
    assert read_record(checkpoint)["state"]["epoch"] == 12
    assert (
        main(
            ["train"]
            + GRAPH
            + ["--epochs", "14", "--checkpoint", str(checkpoint), "--resume", "--json", str(single_json)]
        )
        == 0
    )
    assert len(json.loads(single_json.read_text())["val_accuracy"]["history"][0]) == 14


def test_two_ranks_stay_in_step_on_mini_batches(tmp_path):
    path = tmp_path / "ddp.json"
    done = _torchrun(GRAPH + ["--epochs", "3", "--batch-size", "250", "--sampler", "random-node", "--json", str(path)])
    assert done.returncode == 0, done.stderr[-3000:]
    spread = json.loads(path.read_text())["rank_spread"][0]
    assert len(spread) == 3 and max(spread) <= 1e-6  # after 4 steps per epoch


def test_more_ranks_than_training_nodes_is_refused(tmp_path):
    done = _torchrun(["--dataset", "synthetic:2,1,4,2", "--epochs", "1", "--quiet"])  # 1 training node
    assert done.returncode != 0 and "1 nodes cannot be shared by 2 ranks" in done.stderr


def test_a_rank_that_dies_stops_the_job_and_leaves_the_checkpoint_whole(tmp_path):
    checkpoint = tmp_path / "ddp.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        "-m",
        "iexact",
        "train",
        *GRAPH,
        "--epochs",
        "100000",
        "--checkpoint",
        str(checkpoint),
        "--save-every",
        "1",
    ]
    job = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        while not checkpoint.exists() and time.monotonic() < deadline and job.poll() is None:
            time.sleep(0.2)
        assert checkpoint.exists(), job.communicate(timeout=10)[1][-3000:]
        workers = subprocess.run(["pgrep", "-f", "-P", str(job.pid), "iexact"], capture_output=True, text=True)
        victims = [int(pid) for pid in workers.stdout.split()]
        assert len(victims) == 2
        os.kill(victims[1], signal.SIGKILL)
        _, stderr = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode != 0 and "SIGKILL" in stderr
    record = read_record(checkpoint)
    assert record["state"]["epoch"] >= 1 and not list(tmp_path.glob("*.tmp"))
