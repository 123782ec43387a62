"""The ``iexact`` command: ``datasets``, ``train``, ``analyze``, ``plan`` and
``bench {train,batch-size,gradients,memory,codec}``."""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import subprocess
import sys
from pathlib import Path

import torch

from ..config import PRESETS, CompressionConfig
from ..memory import format_bytes
from ..planning import PlanError, candidate_configs
from ..seeds import SEED_LIMIT
from . import bench, distributed
from .batch_size import batch_size_table, largest_batch
from .batching import SAMPLERS, Batching
from .checkpoint import CheckpointError
from .data import DATASETS, GRAPH_LAYOUTS, load_prepared, num_classes, synthetic_cache
from .estimate import NotEnoughMemory, check_fits, least_bytes
from .experiment import CHECKPOINTING, FP32, PLANNED, Settings, run_experiment
from .files import (
    OutputError,
    check_folder,
    check_writable,
    refuse_overwrite,
    remove_stale_temporaries,
    write_json_atomically,
    write_text_atomically,
)
from .limits import apply_memory_limit, is_out_of_memory, out_of_memory_message, parse_bytes
from .models import MODELS, REFERENCE, build_model
from .plan import MATCHED, PlanFileError, plan_record, read_plan, resolved
from .plan import summary as plan_summary
from .progress import Progress
from .train import Diverged
from .validation import DatasetError


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _number(low: float, high: float = float("inf"), low_open: bool = False):
    """An argparse type for a float in ``[low, high)`` (``(low, high)`` when ``low_open``)."""
    interval = f"{'(' if low_open else '['}{low:g}, {high:g})"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number in {interval}, got {text!r}") from None
        if not (low < value if low_open else low <= value) or not value < high:
            raise argparse.ArgumentTypeError(f"must be in {interval}, got {value:g}")
        return value

    return parse


def _size(text: str) -> int:
    try:
        return parse_bytes(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _block_size(text: str):
    if text == "row":
        return "row"
    try:
        return _positive_int(text)
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(f'must be a positive integer or "row", got {text!r}') from None


def _choices(allowed):
    """An argparse type for a comma-separated subset of ``allowed``."""

    def parse(text: str) -> list[str]:
        names = [part.strip() for part in text.split(",") if part.strip()]
        unknown = [name for name in names if name not in allowed]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"unknown {', '.join(unknown) or 'empty list'}: choose from {','.join(allowed)}"
            )
        return names

    return parse


def _device(text: str) -> torch.device:
    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"unknown device {text!r}: use cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"unsupported device {text!r}: use cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError("cuda was asked for but torch sees no CUDA device")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(
            f"{text} was asked for but torch sees {torch.cuda.device_count()} "
            f"CUDA device(s): cuda:0 to cuda:{torch.cuda.device_count() - 1}"
        )
    return device


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**62), got {text!r}") from None
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**62), got {value}")
    return value


def _compression(args, parser) -> CompressionConfig | None:
    """The preset ``--config`` with any explicit ``--bits/--block-size/--rp-ratio/--levels/--rp-norm``
    (those of them the command has)."""
    overrides = {
        field: getattr(args, field)
        for field in ("bits", "block_size", "rp_ratio", "levels", "rp_norm")
        if getattr(args, field, None) is not None
    }
    if args.config in (FP32, CHECKPOINTING):
        if overrides:
            parser.error(
                f"--config {args.config} stores nothing compressed: drop "
                f"{', '.join(sorted(overrides))} or pick a compressed --config"
            )
        return None
    try:
        return dataclasses.replace(PRESETS[args.config], **overrides)
    except ValueError as error:
        parser.error(str(error))


def _fanout(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated integers, one per layer (e.g. 15,10,5; -1 for all neighbours), got {text!r}"
        ) from None


def _batching(args, parser) -> Batching | None:
    """``--batch-size/--fanout/--sampler`` as a :class:`Batching`, or ``None`` for full batch."""
    if args.batch_size is None:
        if args.fanout is not None or args.sampler is not None:
            parser.error("--fanout and --sampler need --batch-size (without it, training is full batch)")
        return None
    try:
        return Batching(args.batch_size, args.fanout, args.sampler or "neighbor")
    except ValueError as error:
        parser.error(str(error))


def _check_work(settings: Settings, data, ranks, parser) -> None:
    """Refuse, before anything trains, a model size the model cannot take, a
    fanout that does not match the model's layers and training nodes too few
    to share among the ranks."""
    try:
        build_model(
            settings.model, data.num_features, num_classes(data), settings.layers, settings.hidden, settings.dropout
        )
        if settings.batching is not None and settings.graph != "edge_index":
            raise ValueError(
                f"--graph {settings.graph} trains full batch: PyG's loaders sample an edge_index; "
                f"drop --batch-size or --graph"
            )
        if settings.batching is not None:
            settings.batching.check_layers(settings.layers or REFERENCE[settings.model].layers)
        if ranks is not None:
            distributed.train_share(data.train_mask, ranks)
    except ValueError as error:
        parser.error(str(error))


def _settings(args, config_name: str, config: CompressionConfig | None, module_configs: dict | None = None) -> Settings:
    return Settings(
        dataset=args.dataset,
        model=args.model,
        config_name=config_name,
        config=config,
        layers=args.layers,
        hidden=args.hidden,
        dropout=args.dropout,
        lr=args.lr,
        weight_decay=args.weight_decay,
        grad_clip=args.grad_clip,
        seed=args.seed,
        batching=_batching(args, args.parser),
        graph=args.graph,
        module_configs=tuple((module_configs or {}).items()),
    )


def _planned(args, parser) -> tuple[CompressionConfig, dict[str, CompressionConfig]]:
    """``--plan FILE``: its base config and configs by module, for the model and
    dataset it was made for (the config flags are the plan's to set)."""
    flags = [
        flag
        for flag, field in (
            ("--bits", "bits"),
            ("--block-size", "block_size"),
            ("--rp-ratio", "rp_ratio"),
            ("--levels", "levels"),
            ("--rp-norm", "rp_norm"),
        )
        if getattr(args, field) is not None
    ]
    if args.config != "default" or flags:
        parser.error(f"--plan sets the compression of every layer: drop {', '.join(flags) or '--config'}")
    try:
        matched, base, modules = read_plan(args.plan)
    except PlanFileError as error:
        parser.error(str(error))
    asked = resolved(vars(args))
    differing = [
        f"--{field} {matched[field]} (not {asked[field]})" for field in MATCHED if matched[field] != asked[field]
    ]
    if differing:
        parser.error(f"{args.plan} was made for {', '.join(differing)}: plan this run with iexact plan")
    return base, modules


def _load(args, parser, layout: str = "edge_index"):
    try:
        data = load_prepared(args.dataset, args.root, download=not args.offline, seed=args.seed, layout=layout)
    except ValueError as error:
        parser.error(str(error))
    return data.to(args.device)


def _set_threads(args) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)


def _describe_record(record: dict) -> str:
    memory, accuracy = record["activation_memory"], record["test_accuracy"]
    return "\n".join(
        [
            f"test accuracy {100 * accuracy['mean']:.2f} ± {100 * accuracy['std']:.2f} % "
            f"(best validation epoch, {record['runs']} run{'s' if record['runs'] > 1 else ''})",
            f"activation memory {format_bytes(memory['total'], 'MiB')} (compressed {format_bytes(memory['compressed'], 'MiB')}, "
            f"uncompressed {format_bytes(memory['uncompressed'], 'MiB')}; allocator's count {format_bytes(memory['allocator'], 'MiB')})",
            f"peak memory {format_bytes(record['peak_memory']['bytes'], 'MiB')} ({record['peak_memory']['kind']})"
            + (
                ""
                if "memory_parts" not in record
                else ": "
                + ", ".join(
                    f"{part.replace('_', ' ')} {format_bytes(nbytes, 'MiB')}"
                    for part, nbytes in record["memory_parts"].items()
                )
            )
            + (
                ""
                if record.get("peak_address_space") is None
                else f"; peak address space {format_bytes(record['peak_address_space'], 'GiB')} (what --memory-limit counts)"
            ),
            f"median epoch time {1e3 * record['epoch_seconds_median']:.1f} ms ({record['threads']} threads)",
            *(
                []
                if record["gradient_error"] is None
                else [
                    f"gradient error not measured, its FP32 reference ran {record['gradient_error']['out_of_memory']}"
                    if "out_of_memory" in record["gradient_error"]
                    else f"gradient error at initialization {record['gradient_error']['whole']:.3f} "
                    f"(relative to FP32, mean of {record['gradient_error']['draws']} draws)"
                ]
            ),
        ]
    )


def _write_json(path, record) -> None:
    write_json_atomically(path, record)


def _check_memory(
    args, parser, compressed: bool, full_batch: bool, graph: str, what: str, hints: list[str] | None = None
) -> None:
    """:func:`~iexact.experiments.estimate.check_fits` before anything is built
    (a malformed dataset name is a usage error)."""
    try:
        parts = least_bytes(
            args.dataset, args.model, args.hidden, args.layers, compressed, full_batch, graph, args.root, args.seed
        )
    except ValueError as error:
        parser.error(str(error))
    check_fits(parts, what, hints)


def _out_folder(args, results: str) -> Path:
    """``--out`` as a folder that can be written and holds no earlier ``results``
    file unless ``--overwrite`` (a usage error otherwise)."""
    out = Path(args.out)
    try:
        check_folder(out, "--out")
        if not args.overwrite:
            refuse_overwrite(
                out / results, "--out", "add --overwrite to replace those results or name another --out folder"
            )
    except OutputError as error:
        args.parser.error(str(error))
    return out


def _check_outputs(args, parser) -> None:
    """Before anything loads or trains: ``--json`` and ``--checkpoint`` can be
    written, and an existing file is replaced only with ``--resume`` (the same
    experiment, continued) or ``--overwrite``; stale temporaries of killed
    runs beside them are removed."""
    if args.resume and args.overwrite:
        parser.error("--resume continues the checkpoint and --overwrite replaces it: pick one")
    allowed = "add --resume to continue that experiment or --overwrite to replace the file"
    try:
        for path, what in ((args.checkpoint, "--checkpoint"), (args.json, "--json")):
            if path is None:
                continue
            check_writable(path, what)
            if not (args.resume or args.overwrite):
                refuse_overwrite(path, what, allowed)
            remove_stale_temporaries(path)
    except OutputError as error:
        parser.error(str(error))


def _train(args) -> int:
    """Train; inside a ``torchrun`` job of several processes, data-parallel
    (rank 0 prints and writes the files)."""
    parser = args.parser
    if (args.save_every or args.resume) and args.checkpoint is None:
        parser.error("--save-every and --resume need --checkpoint PATH")
    _check_outputs(args, parser)
    try:
        ranks = distributed.ranks_from_environment()
        if ranks is not None:
            args.device = distributed.rank_device(ranks, args.device)
    except ValueError as error:
        parser.error(str(error))
    _set_threads(args)
    if args.plan is None:
        config = _compression(args, parser)
        settings = _settings(args, args.config, config)
    else:
        config, module_configs = _planned(args, parser)
        settings = _settings(args, PLANNED, config, module_configs)
    if args.memory_limit is not None:
        if ranks is None or ranks.is_main:
            _prepare_outside_limit(args, parser, settings.graph)
        try:
            apply_memory_limit(args.memory_limit)
        except ValueError as error:
            parser.error(str(error))
    _check_memory(
        args,
        parser,
        config is not None,
        settings.batching is None,
        settings.graph,
        f"{args.dataset} with {args.model}, config {args.config}",
    )
    data = _load(args, parser, settings.graph)
    _check_work(settings, data, ranks, parser)
    main = ranks is None or ranks.is_main
    if main:
        batching = settings.batching
        print(
            f"dataset {args.dataset} ({data.num_nodes:,} nodes, {data.num_edges:,} edges, "
            f"{data.num_features} features), model {args.model}, "
            + (
                f"config {args.config}{f' ({config})' if config else ''}, "
                if args.plan is None
                else f"the plan of {args.plan} ({len(settings.module_configs)} layers; base {config}), "
            )
            + (
                "full batch"
                if batching is None
                else f"{batching.sampler} batches of {batching.batch_size}"
                + (f", fanout {','.join(map(str, batching.fanout))}" if batching.fanout else "")
            )
            + f", device {args.device}, {torch.get_num_threads()} threads"
            + ("" if ranks is None else f", {ranks.world_size} processes (DistributedDataParallel)")
        )
    progress = Progress(settings.config_name, args.epochs, args.runs, main and not args.quiet)
    if ranks is not None:
        distributed.start(ranks, args.device)
    try:
        record = run_experiment(
            settings,
            data,
            args.device,
            args.epochs,
            args.runs,
            args.checkpoint,
            args.save_every or 0,
            args.resume,
            progress,
            ranks,
        )
    finally:
        distributed.stop()
    if not main:
        return 0
    print(_describe_record(record))
    if args.json:
        _write_json(args.json, record)
        print(f"results written to {args.json}")
    return 0


def _bench_train(args) -> int:
    """Each configuration trains in a fresh process, so peak memory (the
    process's peak RSS on CPU) and timings are its own."""
    out = _out_folder(args, "bench.json")
    _check_memory(args, args.parser, True, False, args.graph, f"loading {args.dataset}")
    data = _load(args, args.parser, args.graph)
    print(
        f"dataset {args.dataset} ({data.num_nodes:,} nodes, {data.num_edges:,} edges), model {args.model}, "
        f"{args.epochs} epochs x {args.runs} runs, device {args.device}",
        flush=True,
    )
    del data
    job = {
        "epochs": args.epochs,
        "runs": args.runs,
        "device": str(args.device),
        "root": str(args.root),
        "offline": args.offline,
        "threads": args.threads,
        "quiet": args.quiet,
        "memory_limit": args.memory_limit,
    }
    settings = [
        (label, _settings(args, name, config))
        for label, name, config in bench.training_configs(args.configs, args.block_sizes)
    ]
    records = bench.run_training(settings, job, out)
    table = bench.markdown_table(records) + "\n\nBest validation accuracy (%) so far:\n\n" + bench.curve_table(records)
    print(table)
    threads = next((record["threads"] for record in bench.completed(records)), args.threads)
    limit = "" if args.memory_limit is None else f", memory limit {format_bytes(args.memory_limit, 'GiB')}"
    heading = (
        f"{args.model} on {args.dataset}, {args.epochs} epochs x {args.runs} runs, {args.device}, "
        f"torch {torch.__version__}, {threads} threads{limit}\n\n"
    )
    write_text_atomically(out / "bench.md", heading + table + "\n")
    _write_json(out / "bench.json", records)
    written = [out / "bench.md", out / "bench.json"]
    try:
        written += bench.write_plots(records, out)
    except ImportError as error:
        print(f"iexact bench: no plots: {error}", file=sys.stderr)
    print("wrote " + ", ".join(str(path) for path in written))
    failed = [record["label"] for record in records if "failed" in record]
    if failed:
        print(
            f"iexact bench train: error: {', '.join(failed)} failed (see the table; the others are complete)",
            file=sys.stderr,
        )
        return 1
    return 0


def _analyze(args) -> int:
    """Train a few epochs (or load ``--checkpoint``), then write the analysis to ``--out``."""
    from .analyze import analysis_record, summary, write_report

    parser = args.parser
    out = _out_folder(args, "analyze.json")
    _set_threads(args)
    config = _compression(args, parser)
    settings = Settings(
        dataset=args.dataset,
        model=args.model,
        config_name=args.config,
        config=config,
        layers=args.layers,
        hidden=args.hidden,
        dropout=args.dropout,
        lr=args.lr,
        seed=args.seed,
    )
    _check_memory(args, parser, True, True, "edge_index", f"{args.dataset} with {args.model}")
    data = _load(args, parser)
    _check_work(settings, data, None, parser)
    progress = Progress(args.config, args.epochs, 1, not args.quiet and args.checkpoint is None)
    record, analyses = analysis_record(settings, data, args.device, args.epochs, args.checkpoint, args.draws, progress)
    print(summary(record))
    try:
        written = write_report(record, analyses, out)
    except ImportError as error:
        print(f"iexact analyze: no figures: {error}", file=sys.stderr)
        written = [out / "analyze.json", out / "analyze.md"]
    print("wrote " + ", ".join(str(path) for path in written))
    return 0


def _plan(args) -> int:
    """Plan the compression within ``--memory``, check it, and write the plan file."""
    parser = args.parser
    try:
        check_writable(args.out, "--out")
        if not args.overwrite:
            refuse_overwrite(args.out, "--out", "add --overwrite to replace it or name another --out file")
        remove_stale_temporaries(args.out)
    except OutputError as error:
        parser.error(str(error))
    _set_threads(args)
    base = _compression(args, parser)  # the fields the plan keeps: --bits and the like are its to choose
    settings = Settings(
        dataset=args.dataset,
        model=args.model,
        config_name=args.config,
        config=base,
        layers=args.layers,
        hidden=args.hidden,
        dropout=args.dropout,
        seed=args.seed,
    )
    # the sensitivities are measured against FP32 gradients: FP32 must fit once
    _check_memory(
        args,
        parser,
        False,
        True,
        "edge_index",
        f"planning {args.dataset} with {args.model} (the FP32 reference of the gradient error)",
        ["a machine with more memory"],
    )
    data = _load(args, parser)
    _check_work(settings, data, None, parser)
    print(
        f"dataset {args.dataset} ({data.num_nodes:,} nodes, {data.num_edges:,} edges), model {args.model}, "
        f"activation budget {format_bytes(args.memory)}; measuring {len(candidate_configs(base))} configs per layer "
        f"(device {args.device}, {torch.get_num_threads()} threads)",
        flush=True,
    )
    try:
        record = plan_record(settings, data, args.device, args.memory, args.draws)
    except PlanError:
        raise
    except ValueError as error:  # a model that compresses nothing
        parser.error(str(error))
    _write_json(args.out, record)
    given = ["--root", args.root] if args.root != "data" else []
    print(plan_summary(record, args.out, given + (["--offline"] if args.offline else [])))
    print(f"plan written to {args.out}")
    return 0


def _bench_batch_size(args) -> int:
    """The largest batch size within ``--memory`` per configuration."""
    parser = args.parser
    _set_threads(args)
    try:
        batching = Batching(1, args.fanout, args.sampler)
    except ValueError as error:
        parser.error(str(error))
    settings = {
        name: Settings(
            dataset=args.dataset,
            model=args.model,
            config_name=name,
            config=None if name == FP32 else PRESETS[name],
            layers=args.layers,
            hidden=args.hidden,
            seed=args.seed,
            batching=batching,
        )
        for name in args.configs
    }
    data = _load(args, parser)
    for one in settings.values():
        _check_work(one, data, None, parser)
    print(
        f"dataset {args.dataset} ({data.num_nodes:,} nodes, {data.num_edges:,} edges), model {args.model}, "
        f"{batching.sampler} batches"
        + (f", fanout {','.join(map(str, batching.fanout))}" if batching.fanout else "")
        + f", activation budget {format_bytes(args.memory)}, costliest of {args.samples} batches per size, "
        f"device {args.device}, {torch.get_num_threads()} threads",
        flush=True,
    )
    results = []
    for name, one in settings.items():
        results.append(largest_batch(name, one, data, args.device, args.memory, args.samples))
        print(f"{name}: {results[-1].batch_size:,}", flush=True)
    print(batch_size_table(results, format_bytes(args.memory)))
    if args.json:
        _write_json(args.json, [dataclasses.asdict(result) for result in results])
        print(f"results written to {args.json}")
    return 0


def _bench_gradients(args) -> int:
    _set_threads(args)
    data = _load(args, args.parser)
    print(bench.gradient_report(data, args.model, args.draws, args.steps, args.device))
    return 0


def _bench_memory(args) -> int:
    _set_threads(args)
    print(bench.memory_report(args.nodes, args.edges, args.features, args.device))
    return 0


def _bench_codec(args) -> int:
    _set_threads(args)
    print(bench.codec_report(args.rows, args.width, args.repeats, args.seed, args.sweep))
    return 0


def _datasets(args) -> int:
    """List the names, or with ``--prepare NAME`` build (or check) that dataset
    under ``--root`` as training will read it."""
    if args.prepare is None:
        print("datasets (--dataset), read from --root:")
        for name in DATASETS:
            print(f"  {name}")
        return 0
    name = args.prepare
    _set_threads(args)
    try:  # the data and the build alone: no model, no activations
        check_fits(
            least_bytes(name, "sage", None, None, True, False, args.graph, args.root, args.seed),
            f"building {name}",
            ["a machine with more memory"],
        )
        data = load_prepared(name, args.root, download=not args.offline, seed=args.seed, layout=args.graph)
        path = synthetic_cache(name, args.root, args.seed, args.graph)
    except ValueError as error:
        args.parser.error(str(error))
    print(
        f"{name}: {data.num_nodes:,} nodes, {data.num_edges:,} edges, {data.num_features} features, "
        f"--graph {args.graph}; "
        + (
            f"cached at {path}"
            if path is not None
            else "built again by every run (small enough)"
            if name.lower().startswith("synthetic")
            else f"ready under {args.root}"
        )
    )
    return 0


def _prepare_outside_limit(args, parser, layout: str) -> None:
    r"""Build a synthetic graph that is cached and not built yet in a child
    process without ``--memory-limit``: building ``synthetic-products`` takes
    14 GiB, loading its cache what the tensors hold, and the limit is on
    training. The child's peak stays out of this process's address space."""
    try:
        path = synthetic_cache(args.dataset, args.root, args.seed, layout)
    except ValueError as error:
        parser.error(str(error))
    if path is None or path.is_file():
        return
    print(
        f"building {args.dataset} once, in a process of its own outside the memory limit (cached at {path})", flush=True
    )
    command = [
        sys.executable,
        "-m",
        "iexact",
        "datasets",
        "--prepare",
        args.dataset,
        "--root",
        str(args.root),
        "--seed",
        str(args.seed),
        "--graph",
        layout,
    ] + (["--threads", str(args.threads)] if args.threads else [])
    if subprocess.run(command, check=False).returncode != 0:
        raise DatasetError(f"building {args.dataset} failed (its error is above); nothing was trained")


def _add_threads(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--threads", type=_positive_int, default=None, help="torch CPU threads (default: torch's own choice)"
    )


def _add_experiment_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--dataset", default="synthetic", help="dataset name, see `iexact datasets` (default: synthetic)"
    )
    command.add_argument("--root", default="data", help="directory holding the datasets (default: data)")
    command.add_argument("--offline", action="store_true", help="never download missing dataset files")
    command.add_argument("--model", choices=MODELS, default="sage", help="reference model (default: sage)")
    command.add_argument("--layers", type=_positive_int, help="override the model's layer count")
    command.add_argument("--hidden", type=_positive_int, help="override the model's hidden width")
    command.add_argument("--dropout", type=_number(0, 1), help="override the model's dropout")
    command.add_argument("--epochs", type=_positive_int, default=200, help="epochs per run (default: 200)")
    command.add_argument("--runs", type=_positive_int, default=1, help="runs, seeds seed..seed+runs-1 (default: 1)")
    command.add_argument(
        "--lr", type=_number(0, low_open=True), default=0.01, help="Adam learning rate (default: 0.01)"
    )
    command.add_argument("--weight-decay", type=_number(0), default=0.0, help="Adam weight decay (default: 0)")
    command.add_argument(
        "--grad-clip", type=_number(0, low_open=True), default=0.5, help="max gradient norm (default: 0.5)"
    )
    command.add_argument(
        "--device",
        type=_device,
        default=torch.device("cuda" if torch.cuda.is_available() else "cpu"),
        help="cpu, cuda or cuda:N (default: cuda when available)",
    )
    command.add_argument(
        "--seed", type=_seed, default=0, help="seed of run 1 and of synthetic graphs, in [0, 2**62) (default: 0)"
    )
    command.add_argument(
        "--batch-size",
        type=_positive_int,
        help="train on mini-batches: seed nodes per batch (neighbor) or nodes per part "
        "(random-node); default: full batch",
    )
    command.add_argument(
        "--fanout",
        type=_fanout,
        help="neighbours sampled per hop, one count per layer (e.g. 15,10,5; -1: all); neighbor sampler only",
    )
    command.add_argument(
        "--sampler", choices=SAMPLERS, help="mini-batch sampler: PyG's NeighborLoader (default) or RandomNodeLoader"
    )
    command.add_argument(
        "--graph",
        choices=GRAPH_LAYOUTS,
        default="edge_index",
        help="graph layout: edge_index as loaded, or csr (PyG's ToSparseTensor: a torch.sparse "
        "adjacency, aggregated without one message per edge); default: edge_index",
    )
    command.add_argument(
        "--memory-limit",
        type=_size,
        help="train under this address-space limit (e.g. 8GiB): an allocation beyond it stops the run with one line",
    )
    command.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_threads(command)


def _add_config_arguments(command: argparse.ArgumentParser, configs, text: str) -> None:
    command.add_argument("--config", choices=configs, default="default", help=text)
    command.add_argument("--bits", type=int, help="override the preset's bits (1, 2, 4, 8)")
    command.add_argument("--block-size", type=_block_size, help='override the block size (int or "row")')
    command.add_argument("--rp-ratio", type=float, help="override the projection ratio (>= 1)")
    command.add_argument("--levels", help="override the levels (uniform, optimal, calibrated)")
    command.add_argument("--rp-norm", action="store_const", const=True, help="also project BatchNorm inputs")


def _add_data_arguments(command: argparse.ArgumentParser) -> None:
    """``--dataset``, ``--root``, ``--offline`` and ``--model``."""
    command.add_argument("--dataset", default="synthetic", help="dataset name (default: synthetic)")
    command.add_argument("--root", default="data", help="directory holding the datasets (default: data)")
    command.add_argument("--offline", action="store_true", help="never download missing dataset files")
    command.add_argument("--model", choices=MODELS, default="sage", help="reference model (default: sage)")


def _add_analyze(commands) -> None:
    analyze = commands.add_parser(
        "analyze",
        help="the compressed activations' distributions, rounding variance and gradient error per layer, with figures",
    )
    _add_data_arguments(analyze)
    analyze.add_argument("--layers", type=_positive_int, help="override the model's layer count")
    analyze.add_argument("--hidden", type=_positive_int, help="override the model's hidden width")
    analyze.add_argument("--dropout", type=_number(0, 1), help="override the model's dropout")
    _add_config_arguments(analyze, tuple(PRESETS), "compression preset (default: default)")
    analyze.add_argument(
        "--epochs", type=_positive_int, default=5, help="epochs to train before analyzing (default: 5)"
    )
    analyze.add_argument(
        "--checkpoint", help="analyze the model of this iexact train checkpoint instead (made with the same settings)"
    )
    analyze.add_argument(
        "--lr", type=_number(0, low_open=True), default=0.01, help="Adam learning rate (default: 0.01)"
    )
    analyze.add_argument("--seed", type=_seed, default=0, help="seed of the model and of synthetic graphs (default: 0)")
    analyze.add_argument(
        "--draws", type=_positive_int, default=4, help="compressed backward passes for the gradient error (default: 4)"
    )
    analyze.add_argument("--device", type=_device, default=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    analyze.add_argument("--out", default="analyze-results", help="folder for analyze.json, analyze.md and figures")
    analyze.add_argument("--overwrite", action="store_true", help="replace an earlier analysis in --out")
    analyze.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_threads(analyze)
    analyze.set_defaults(run=_analyze, parser=analyze)


def _add_plan(commands) -> None:
    plan = commands.add_parser(
        "plan",
        help="the bits, block size and projection per layer that fit an "
        "activation-memory budget with the least predicted gradient error",
    )
    _add_data_arguments(plan)
    plan.add_argument(
        "--memory",
        type=_size,
        required=True,
        help="activation memory allowed, as activation_memory counts it (e.g. 64MiB, 2GB, 500000)",
    )
    plan.add_argument("--layers", type=_positive_int, help="override the model's layer count")
    plan.add_argument("--hidden", type=_positive_int, help="override the model's hidden width")
    plan.add_argument("--dropout", type=_number(0, 1), help="override the model's dropout")
    plan.add_argument(
        "--config",
        choices=tuple(PRESETS),
        default="default",
        help="preset whose levels, projection kind, scale dtype and rp_norm the plan keeps (default: default)",
    )
    plan.add_argument("--levels", help="override the levels (uniform, optimal, calibrated)")
    plan.add_argument("--rp-norm", action="store_const", const=True, help="also project BatchNorm inputs")
    plan.add_argument("--seed", type=_seed, default=0, help="seed of the model and of synthetic graphs (default: 0)")
    plan.add_argument(
        "--draws",
        type=_positive_int,
        default=4,
        help="compressed backward passes per gradient-error measurement (default: 4)",
    )
    plan.add_argument("--device", type=_device, default=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    plan.add_argument("--out", default="plan.json", help="plan file to write (default: plan.json)")
    plan.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    _add_threads(plan)
    plan.set_defaults(run=_plan, parser=plan)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iexact", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    datasets = commands.add_parser("datasets", help="list the dataset names, or build one with --prepare")
    datasets.add_argument(
        "--prepare",
        metavar="NAME",
        help="build (or check) this dataset under --root as training reads it, caching a large synthetic graph",
    )
    datasets.add_argument("--root", default="data", help="directory holding the datasets (default: data)")
    datasets.add_argument("--offline", action="store_true", help="never download missing dataset files")
    datasets.add_argument("--seed", type=_seed, default=0, help="seed of synthetic graphs (default: 0)")
    datasets.add_argument(
        "--graph", choices=GRAPH_LAYOUTS, default="edge_index", help="graph layout to build (default: edge_index)"
    )
    _add_threads(datasets)
    datasets.set_defaults(run=_datasets, parser=datasets)

    train = commands.add_parser("train", help="train a reference model with compressed activations")
    _add_experiment_arguments(train)
    _add_config_arguments(
        train,
        (FP32, *PRESETS, CHECKPOINTING),
        "compression preset; fp32 for none, checkpoint "
        "for torch.utils.checkpoint around every message-passing layer (default: default)",
    )
    train.add_argument("--json", help="write the results to this JSON file")
    train.add_argument(
        "--checkpoint",
        help="checkpoint file: written at the end of every run (and every "
        "--save-every epochs), or resumed from with --resume",
    )
    train.add_argument("--save-every", type=_positive_int, help="save a checkpoint every N epochs")
    train.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    train.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --checkpoint or --json file (refused without it or --resume)",
    )
    train.add_argument(
        "--plan",
        help="train with the per-layer compression of this iexact plan file "
        "(made for the same dataset, model, layers and hidden width)",
    )
    train.set_defaults(run=_train, parser=train)

    _add_analyze(commands)
    _add_plan(commands)

    bench_parser = commands.add_parser("bench", help="benchmarks, FP32 beside the compressed configurations")
    kinds = bench_parser.add_subparsers(dest="kind", required=True)
    training = kinds.add_parser(
        "train",
        help="train FP32, the presets, a block-size sweep, uniform levels, "
        "rp_norm and torch.utils.checkpoint side by side",
    )
    _add_experiment_arguments(training)
    training.add_argument(
        "--configs",
        type=_choices(bench.TRAIN_CONFIGS),
        default=list(bench.TRAIN_CONFIGS),
        help=f"configurations to compare (default: all of {','.join(bench.TRAIN_CONFIGS)})",
    )
    training.add_argument(
        "--block-sizes",
        type=lambda text: [_block_size(part) for part in text.split(",")],
        default=[64, 128, 1024],
        help="block sizes of the default config's sweep (default: 64,128,1024); "
        "a configuration equal to one already listed runs once",
    )
    training.add_argument("--out", default="bench-results", help="folder for bench.md, bench.json, runs/ and plots")
    training.add_argument(
        "--overwrite", action="store_true", help="replace the results of an earlier bench in --out (refused without it)"
    )
    training.set_defaults(run=_bench_train, parser=training)

    gradients = kinds.add_parser(
        "gradients",
        help="gradient error, activation memory and step time of every projection / bits / levels idea against FP32",
    )
    _add_data_arguments(gradients)
    gradients.add_argument("--seed", type=_seed, default=0, help="seed of synthetic graphs (default: 0)")
    gradients.add_argument("--draws", type=_positive_int, default=4, help="compressed backward passes (default: 4)")
    gradients.add_argument("--steps", type=_positive_int, default=5, help="timed training steps (default: 5)")
    gradients.add_argument(
        "--device", type=_device, default=torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    _add_threads(gradients)
    gradients.set_defaults(run=_bench_gradients, parser=gradients)

    batches = kinds.add_parser(
        "batch-size", help="the largest mini-batch whose activations fit --memory, FP32 beside the compressed configs"
    )
    _add_data_arguments(batches)
    batches.add_argument("--memory", type=_size, required=True, help="activation memory allowed per batch (e.g. 64MiB)")
    batches.add_argument("--layers", type=_positive_int, help="override the model's layer count")
    batches.add_argument("--hidden", type=_positive_int, help="override the model's hidden width")
    batches.add_argument(
        "--fanout", type=_fanout, help="neighbours sampled per hop, one count per layer (neighbor sampler)"
    )
    batches.add_argument(
        "--sampler", choices=SAMPLERS, default="neighbor", help="PyG's NeighborLoader (default) or RandomNodeLoader"
    )
    batches.add_argument(
        "--configs",
        type=_choices((FP32, *PRESETS)),
        default=[FP32, "default"],
        help=f"configurations (default: fp32,default; any of {','.join((FP32, *PRESETS))})",
    )
    batches.add_argument(
        "--samples",
        type=_positive_int,
        default=3,
        help="batches measured per batch size, the costliest counting (default: 3)",
    )
    batches.add_argument("--seed", type=_seed, default=0, help="seed of the batches and the model (default: 0)")
    batches.add_argument("--device", type=_device, default=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    batches.add_argument("--json", help="write the results to this JSON file")
    _add_threads(batches)
    batches.set_defaults(run=_bench_batch_size, parser=batches)

    memory = kinds.add_parser("memory", help="activation memory of the stock GraphSAGE on an arxiv-shaped graph")
    memory.add_argument("--nodes", type=_positive_int, default=169_343, help="nodes (default: ogbn-arxiv's 169,343)")
    memory.add_argument(
        "--edges",
        type=_positive_int,
        default=1_166_243,
        help="random edges before making them undirected (default: 1,166,243)",
    )
    memory.add_argument("--features", type=_positive_int, default=128, help="features (default: 128)")
    memory.add_argument("--device", type=_device, default=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    _add_threads(memory)
    memory.set_defaults(run=_bench_memory)

    codec = kinds.add_parser("codec", help="compress one ogbn-arxiv-shaped activation with every preset")
    codec.add_argument("--rows", type=_positive_int, default=169_343, help="rows N (default: ogbn-arxiv's 169,343)")
    codec.add_argument("--width", type=_positive_int, default=128, help="features D (default: 128)")
    codec.add_argument("--repeats", type=_positive_int, default=5, help="timed runs per entry (default: 5)")
    codec.add_argument("--seed", type=_seed, default=0, help="seed of the data and the compression (default: 0)")
    codec.add_argument(
        "--sweep",
        action="store_true",
        help="also the round-trip throughput over bits x block x levels against a straightforward PyTorch version",
    )
    _add_threads(codec)
    codec.set_defaults(run=_bench_codec)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; usage errors exit with status 2, missing files and bad
    checkpoints return 1 after one line on stderr."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print(f"iexact {args.command}: interrupted; {_after_interrupt(args, argv)}", file=sys.stderr)
        return 130
    except (
        CheckpointError,
        DatasetError,
        FileNotFoundError,
        ImportError,
        Diverged,
        NotEnoughMemory,
        PlanError,
    ) as error:
        print(f"iexact {args.command}: error: {error}", file=sys.stderr)
        return 1
    except (MemoryError, RuntimeError) as error:
        if not is_out_of_memory(error):
            raise
        print(f"iexact {args.command}: error: {out_of_memory_message(error)}", file=sys.stderr)
        return 1


def _after_interrupt(args, argv: list[str]) -> str:
    """What an interrupted command leaves: how to resume, or where the results are."""
    if args.command == "train":
        if args.checkpoint is None or not Path(args.checkpoint).is_file():
            return "nothing to resume from (no checkpoint saved; --checkpoint PATH --save-every N keep one)"
        again = [part for part in argv if part != "--overwrite"] + ([] if args.resume else ["--resume"])
        return "resume with: iexact " + shlex.join(again)
    if args.command == "bench" and args.kind == "train":
        return f"finished configurations are in {Path(args.out) / 'runs'}"
    return "nothing was written"


def run() -> int:
    """The console entry point: :func:`main` in a process of its own, whose
    environment it may set (the profiler's Kineto backend otherwise prints
    two log lines every time the allocator is cross-checked)."""
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    return main()


if __name__ == "__main__":
    sys.exit(run())
