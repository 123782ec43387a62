r"""The gradients' error against FP32: the measurement every choice of projection,
bits, levels and block size is judged by.

:func:`gradient_error` trains nothing: it runs the model once uncompressed and
``draws`` times compressed, in training mode, with the same dropout masks (a
converted model draws torch's own, see :mod:`iexact.seeds`), and compares the
gradients.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable

import torch

from ..config import CompressionConfig
from ..nn import compress_, is_compressed, restore_
from .observe import cuda_devices


@dataclasses.dataclass(frozen=True)
class GradientError:
    r"""Relative error of compressed gradients :math:`\hat g` against the FP32 ones :math:`g`.

    Attributes:
        whole (float): :math:`\lVert \hat g - g \rVert / \lVert g \rVert` over all
            parameters' gradients as one vector, averaged over the draws.
        per_parameter (dict): the same per parameter name (parameters whose FP32
            gradient is zero or absent are left out).
        of_mean (float): :math:`\lVert \bar{\hat g} - g \rVert / \lVert g \rVert` of the
            gradient averaged over the draws: falls like :math:`1/\sqrt{\text{draws}}`
            for an unbiased estimator, stalls at the bias otherwise.
        draws (int): compressed backward passes measured.
    """

    whole: float
    per_parameter: dict[str, float]
    of_mean: float
    draws: int

    def __str__(self) -> str:
        width = max([len(name) for name in self.per_parameter] + [5])
        lines = [f"{'parameter':<{width}}  relative error"]
        lines += [f"{name:<{width}}  {error:.4f}" for name, error in self.per_parameter.items()]
        lines.append(
            f"{'whole':<{width}}  {self.whole:.4f} (mean of {self.draws} draws; error of their mean {self.of_mean:.4f})"
        )
        return "\n".join(lines)


def _gradients(model: torch.nn.Module, inputs, kwargs, loss_fn, seed: int) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the same dropout masks in every pass
    loss_fn(model(*inputs, **kwargs)).backward()
    return {name: p.grad.detach().double().flatten() for name, p in model.named_parameters() if p.grad is not None}


def _check_arguments(model, loss_fn, config, draws) -> None:
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(output), got {type(loss_fn).__name__}")
    if config is not None and not isinstance(config, CompressionConfig):
        raise TypeError(f"config must be an iexact.CompressionConfig or None, got {type(config).__name__}")
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws={draws!r} is invalid: draws must be an integer >= 1")
    if config is None and not any(is_compressed(module) for module in model.modules()):
        raise ValueError(
            "gradient_error(config=None) measures the model as compressed, but no module of it "
            "is: pass the config to measure"
        )


def gradient_error(
    model: torch.nn.Module,
    *inputs,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    config: CompressionConfig | None = None,
    draws: int = 8,
    seed: int = 0,
    **kwargs,
) -> GradientError:
    r"""Relative error of the gradients of ``model`` compressed with ``config``
    against its uncompressed twin's, on one batch.

    Both run in training mode on copies (``model`` itself, its mode and
    torch's global random state are left as they were), under
    ``torch.manual_seed(seed)`` so their dropout masks agree; the loss is
    ``loss_fn(model(*inputs, **kwargs))``. A compressed ``model`` is measured
    against its own uncompressed form.

    Args:
        model (torch.nn.Module): the model (compressed or not).
        *inputs: the positional arguments to call it with.
        **kwargs: the keyword arguments to call it with.
        loss_fn (callable): output -> scalar loss.
        config (CompressionConfig, optional): the compression to measure;
            ``None`` measures ``model`` as it is compressed (each module with
            its own config, as :func:`iexact.nn.configure_` or a ``filter_fn``
            left it). (default: :obj:`None`)
        draws (int, optional): compressed backward passes, each with fresh
            compression noise. (default: :obj:`8`)
        seed (int, optional): torch seed of every pass. (default: :obj:`0`)

    Returns:
        :class:`GradientError`.
    """
    _check_arguments(model, loss_fn, config, draws)
    reference = restore_(copy.deepcopy(model)).train()
    compressed = copy.deepcopy(model).train() if config is None else compress_(copy.deepcopy(reference), config)
    devices = cuda_devices(inputs, kwargs)
    with torch.random.fork_rng(devices=devices):
        exact = _gradients(reference, inputs, kwargs, loss_fn, seed)
        samples = [_gradients(compressed, inputs, kwargs, loss_fn, seed) for _ in range(draws)]
    names = [name for name, grad in exact.items() if grad.norm() > 0]
    if not names:
        raise ValueError(
            "gradient_error: the FP32 loss has no nonzero gradient to compare with (is the loss NaN, or "
            "independent of the parameters?)"
        )
    whole_exact = torch.cat([exact[name] for name in names])

    def relative(estimate: torch.Tensor, truth: torch.Tensor) -> float:
        return ((estimate - truth).norm() / truth.norm()).item()

    per_parameter = {name: sum(relative(sample[name], exact[name]) for sample in samples) / draws for name in names}
    wholes = [torch.cat([sample[name] for name in names]) for sample in samples]
    return GradientError(
        whole=sum(relative(estimate, whole_exact) for estimate in wholes) / draws,
        per_parameter=per_parameter,
        of_mean=relative(torch.stack(wholes).mean(0), whole_exact),
        draws=draws,
    )
