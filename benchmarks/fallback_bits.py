r"""The saved-tensor fallback's bit width, by the error it adds: ``python benchmarks/fallback_bits.py``.

Prints a Markdown table: for models that go through the fallback (every
family of :mod:`iexact.experiments.zoo` has handlers now, so: its GPS family
with PyG's ``PerformerAttention`` (``attn_type="performer"``), whose kernel
features have no handler, and a stack of ``FiLMConv``, which has none
either; 3 layers of 64 on a random graph of 2,000
nodes and 16,000 edges), the whole-gradient relative error at initialization
and the error of the mean of ``--draws`` draws, with the handlers at 8 bits
without projection (so that what is measured is the fallback's) and the
fallback at 2, 4 and 8 bits. An error of the mean well above the error over
:math:`\sqrt{\text{draws}}` is bias.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import warnings

import torch
from torch_geometric.nn import FiLMConv

import iexact
from iexact.experiments.zoo import EDGE_DIM, GPSLayer, Stack, gine_conv
from iexact.nn.fallback import DEFAULT_FALLBACK


def through_the_fallback(features: int, hidden: int, classes: int) -> dict:
    """Builders of models through the fallback, by name: ``build()`` returns ``(model, reads edge features)``."""
    widths = [(features, hidden), (hidden, hidden), (hidden, classes)]
    return {
        "GPSConv (GINEConv + performer attention)": lambda: (
            Stack(
                [gine_conv(features, hidden), GPSLayer(hidden, attn_type="performer"), gine_conv(hidden, classes)],
                hidden,
                None,
                torch.nn.ReLU(),
                True,
            ),
            True,
        ),
        "FiLMConv": lambda: (Stack([FiLMConv(i, o) for i, o in widths], hidden, None, torch.nn.ReLU()), False),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--draws", type=int, default=8, help="compressed backward passes per cell (default: 8)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    edge_index = torch.randint(0, 2000, (2, 16000), generator=generator)
    x = torch.randn(2000, 64, generator=generator)
    edge_attr = torch.randn(16000, EDGE_DIM, generator=generator)
    labels = torch.randint(0, 8, (2000,), generator=generator)
    builders = through_the_fallback(64, 64, 8)
    print(f"whole error / error of the mean, {args.draws} draws; handlers at 8 bits without projection")
    print()
    print("| model | fallback at 2 bits | 4 bits | 8 bits (the default) |")
    print("|---|---:|---:|---:|")
    for name in builders:
        cells = []
        for bits in (2, 4, 8):
            torch.manual_seed(0)
            model, featured = builders[name]()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fallback = dataclasses.replace(DEFAULT_FALLBACK, bits=bits)
                iexact.compress_(model, iexact.CompressionConfig(bits=8, rp_ratio=1), fallback=fallback)
            error = iexact.gradient_error(
                model,
                x,
                edge_index,
                loss_fn=lambda out: torch.nn.functional.cross_entropy(out, labels),
                draws=args.draws,
                **({"edge_attr": edge_attr} if featured else {}),
            )
            cells.append(f"{error.whole:.3f} / {error.of_mean:.3f}")
        print(f"| {name} | {' | '.join(cells)} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
