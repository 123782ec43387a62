"""Shared test setup: Triton runs interpreted on CPU-only machines, and torch
uses an explicit number of threads (``IEXACT_TEST_THREADS``, default 2) so
that tests and the child processes they start do not oversubscribe the cores."""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
torch.set_num_threads(int(os.environ.get("IEXACT_TEST_THREADS", "2")))

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    """Every device present: CPU always, CUDA when there is one."""
    return torch.device(request.param)


@pytest.fixture(autouse=True)
def _restore_the_address_space_limit():
    """A command run in this process with ``--memory-limit`` lowers its soft
    ``RLIMIT_AS`` for good; the next test gets the limit back (the hard
    limit is never lowered, so the soft one can be raised again)."""
    import resource

    limits = resource.getrlimit(resource.RLIMIT_AS)
    yield
    resource.setrlimit(resource.RLIMIT_AS, limits)


@pytest.fixture(autouse=True)
def _restore_the_thread_count():
    """A command run in this process with ``--threads`` sets torch's thread count
    for good (as a command line should); the next test gets the suite's back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
