"""The figures the README states and the examples the documentation shows come
from the code as it is: the memory figures recomputed, every Python example run."""

import re
from pathlib import Path

import pytest
import torch

import iexact

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def _example_data():
    """What the examples call ``data``: a small graph of 128 features and 40 classes."""
    from torch_geometric.data import Data

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(400, 128, generator=generator)
    edge_index = torch.randint(0, 400, (2, 3000), generator=generator)
    y = torch.randint(0, 40, (400,), generator=generator)
    train_mask = torch.rand(400, generator=generator) < 0.5
    return Data(x=x, edge_index=edge_index, y=y, train_mask=train_mask)


EXAMPLES = [(path, index, code) for path in PAGES for index, code in enumerate(_python_blocks(path))]


@pytest.mark.parametrize("path, index, code", EXAMPLES, ids=[f"{path.name}-{index}" for path, index, _ in EXAMPLES])
def test_every_python_example_runs(path, index, code):
    """Run in a namespace holding ``data`` (and its ``train`` mask) and ``F``; a
    page's later examples see what its earlier ones defined."""
    import torch.nn.functional as F

    data = _example_data()
    namespace = {"data": data, "train": data.train_mask, "F": F}
    with torch.random.fork_rng():
        torch.manual_seed(0)
        for earlier in _python_blocks(path)[:index]:
            exec(compile(earlier, f"{path.name} (an earlier example)", "exec"), namespace)
        exec(compile(code, f"{path.name} example {index}", "exec"), namespace)


def _mib(nbytes: int) -> str:
    return iexact.format_bytes(nbytes, "MiB")


def test_the_opening_paragraphs_figures_are_the_memory_benchmarks():
    """``iexact bench memory``'s FP32 and default rows, recomputed: the stock GraphSAGE on
    an ogbn-arxiv-shaped graph."""
    from torch_geometric.nn.models import GraphSAGE
    from torch_geometric.utils import to_undirected

    generator = torch.Generator().manual_seed(0)  # as iexact.experiments.bench.memory_report draws it
    edge_index = to_undirected(torch.randint(0, 169_343, (2, 1_166_243), generator=generator))
    x = torch.randn(169_343, 128, generator=generator)
    totals = []
    for config in (None, iexact.CompressionConfig(dropout_masks="seed"), iexact.CompressionConfig()):
        torch.manual_seed(0)
        model = GraphSAGE(128, 128, num_layers=3, out_channels=40, norm="batch", dropout=0.5)
        if config is not None:
            iexact.compress_(model, config)
        totals.append(iexact.activation_memory(model, x, edge_index).total)
    fp32, seeds, cpu = totals
    readme = " ".join((ROOT / "README.md").read_text().split())
    stated = (
        f"keeps {_mib(fp32)} of activations in FP32 and {_mib(seeds)} with the default config keeping dropout "
        f"seeds, as it does on CUDA, **{fp32 / seeds:.1f}× less**; on CPU the default keeps the dropout masks as "
        f"bits instead, which spares backward their redraw: {_mib(cpu)}, {fp32 / cpu:.1f}× less"
    )
    assert stated in readme
    row = (
        f"| {_mib(fp32)} | {_mib(seeds)} ({fp32 / seeds:.1f}× less) keeping dropout seeds as on CUDA; "
        f"{_mib(cpu)} ({fp32 / cpu:.1f}× less) with the masks as bits, the CPU default | `iexact bench memory` |"
    )
    assert row in readme


def test_the_demo_tables_memory_columns_are_what_the_demo_keeps():
    """The activation-memory columns of the README's ``make demo`` table (the
    accuracy and time columns are that run's measurements)."""
    from iexact.experiments.data import load_dataset
    from iexact.experiments.measure import measure_memory
    from iexact.experiments.settings import RunKind, Settings

    data = load_dataset("synthetic")
    rows = {}
    for kind, label, config in (
        (RunKind.FP32, "FP32", None),
        (RunKind.COMPRESSED, "default", iexact.CompressionConfig()),
        (RunKind.COMPRESSED, "seed", iexact.CompressionConfig(dropout_masks="seed")),
    ):
        settings = Settings("synthetic", "sage", kind, label, config)
        rows[label] = measure_memory(settings, data, torch.device("cpu"))["total"]
    readme = (ROOT / "README.md").read_text()
    ratio = rows["FP32"] / rows["default"]
    assert f"| FP32 | 90.5 ± 0.0 | – | {_mib(rows['FP32'])} | 1.0× less |" in readme
    assert f"| {_mib(rows['default'])} | {ratio:.1f}× less |" in readme
    seeds = f"keeps {_mib(rows['seed'])}, {rows['FP32'] / rows['seed']:.1f}× less (`--dropout-masks seed`)"
    assert seeds in " ".join(readme.split())
