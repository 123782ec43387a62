r"""One training forward watched: every tensor ``iexact::compress`` compresses, with
the modules running when it did. The measurements of :mod:`iexact.analysis` and
:mod:`iexact.planning` read the compressions through :func:`observe_compressions`.
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ..memory import running_modules
from ..nn import seed_streams
from ..ops.codec import Stored, config_of
from ..seeds import seed_at


def cuda_devices(inputs, kwargs) -> list[int]:
    """The CUDA devices the tensors among ``inputs`` and ``kwargs`` are on (for ``fork_rng``)."""
    tensors = (*inputs, *kwargs.values())
    return sorted({t.device.index or 0 for t in tensors if isinstance(t, torch.Tensor) and t.is_cuda})


class _CompressCalls(TorchDispatchMode):
    """Hands ``iexact::compress``'s input, seed, config and result to ``record(owners,
    x, seed, config, stored)``, ``owners`` being the stack of modules running
    (innermost last) and ``stored`` the :class:`~iexact.ops.codec.Stored` the op made."""

    def __init__(self, owners: list, record):
        super().__init__()
        self.owners, self.record = owners, record

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is torch.ops.iexact.compress.default:
            x, position, spec, _ = args
            stored = Stored(tuple(out), tuple(x.shape), x.dtype, spec)
            self.record(tuple(self.owners), x.detach(), seed_at(position), config_of(spec), stored)
        return out


def observe_compressions(model: torch.nn.Module, inputs, kwargs, record) -> None:
    """One training forward of ``model`` (torch's generator, the seed streams and
    the buffers end where they were), each compressed tensor
    handed to ``record`` (:class:`_CompressCalls`) as it is compressed."""
    devices = cuda_devices(inputs, kwargs)
    streams = [(stream, stream.get_state()) for stream in seed_streams(model)]
    buffers = [(buffer, buffer.clone()) for buffer in model.buffers()]  # BatchNorm's running statistics
    was_training = model.training
    model.train()
    try:
        with (
            running_modules(model) as owners,
            torch.random.fork_rng(devices=devices),
            torch.enable_grad(),
            _CompressCalls(owners, record),
        ):
            model(*inputs, **kwargs)
    finally:
        for stream, state in streams:
            stream.set_state(state)
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)
        model.train(was_training)
