"""The CUDA path without a GPU: ``IEXACT_KERNELS=triton`` sends CPU tensors through
the Triton kernels (interpreted, ``TRITON_INTERPRET=1``) by the same dispatch and
chunking CUDA takes; every test here counts the kernel launches, so a silent
fall-back to the PyTorch path fails it."""

import dataclasses
import json
import math
import traceback

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch_geometric.nn import ChebConv, ResGatedGraphConv, Sequential

import iexact
from iexact import codec, kernels
from iexact.experiments.cli import main
from iexact.experiments.data import load_dataset
from iexact.experiments.models import MODELS, build_model
from iexact.experiments.train import labels_of, loss_function

triton_quant = pytest.importorskip("iexact.kernels.triton_quant")
triton_codec = pytest.importorskip("iexact.kernels.triton_codec")


def test_the_choice_of_kernels(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.delenv("IEXACT_KERNELS", raising=False)
    assert not kernels.uses_triton(cpu)
    monkeypatch.setenv("IEXACT_KERNELS", "torch")
    assert not kernels.uses_triton(torch.device("cuda"))
    monkeypatch.setenv("IEXACT_KERNELS", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert kernels.uses_triton(cpu)
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(RuntimeError, match="needs TRITON_INTERPRET=1"):
        kernels.uses_triton(cpu)
    monkeypatch.setenv("IEXACT_KERNELS", "cuda")
    with pytest.raises(ValueError, match="IEXACT_KERNELS='cuda' is invalid: use one of auto, triton, torch"):
        kernels.uses_triton(cpu)


@pytest.mark.parametrize(
    "config",
    [
        iexact.CompressionConfig(),
        iexact.CompressionConfig.exact(),
        iexact.CompressionConfig(bits=4, block_size=100, rp_ratio=1),
        iexact.CompressionConfig(rp_ratio=1, levels=(0.0, 0.7, 1.4, 3.0)),
    ],
)
def test_round_trip_on_the_triton_path(config, launches, monkeypatch):
    """Within one block step of the input (no projection), unbiased over draws, and
    with the error variance of the PyTorch path."""
    x = torch.randn(64, 48, generator=torch.Generator().manual_seed(0))
    draws = 100
    triton_samples = torch.stack([codec.decompress(codec.compress(x, config, seed=s)) for s in range(draws)])
    assert launches["compress"] >= draws and launches["decompress"] >= draws
    monkeypatch.setenv("IEXACT_KERNELS", "torch")
    torch_samples = torch.stack([codec.decompress(codec.compress(x, config, seed=s)) for s in range(draws)])
    if config.rp_ratio == 1:
        packed = codec.compress(x, config, seed=0)
        steps = packed.steps.float().repeat_interleave(config.block_size)[: x.numel()].view_as(x)
        assert ((triton_samples - x).abs() <= steps + 1e-6).all()
    bias = triton_samples.double().mean(0) - x
    spread = (triton_samples.double().var(0).sum() / draws).sqrt()
    assert abs(bias.sum()) <= 4 * spread  # the total bias, within 4 standard errors
    triton_variance = (triton_samples - x).pow(2).mean()
    torch_variance = (torch_samples - x).pow(2).mean()
    assert 0.85 < triton_variance / torch_variance < 1.15


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_on_the_triton_path(dtype, launches, monkeypatch):
    """An fp16 or bf16 activation (what autocast's linear maps return) is read
    by the kernels as it is: its dtype back, unbiased, the PyTorch path's variance."""
    x = torch.randn(64, 48, generator=torch.Generator().manual_seed(0)).to(dtype)
    config, draws = iexact.CompressionConfig(), 100
    samples = torch.stack([codec.decompress(codec.compress(x, config, seed=s)) for s in range(draws)])
    assert samples.dtype == dtype and launches["compress"] >= draws
    monkeypatch.setenv("IEXACT_KERNELS", "torch")
    reference = torch.stack([codec.decompress(codec.compress(x, config, seed=s)) for s in range(draws)])
    bias = samples.double().mean(0) - x.double()
    assert abs(bias.sum()) <= 4 * (samples.double().var(0).sum() / draws).sqrt()
    ratio = (samples.double() - x.double()).pow(2).mean() / (reference.double() - x.double()).pow(2).mean()
    assert 0.85 < ratio < 1.15


@pytest.mark.parametrize("name", ["sage", "gat"])
def test_a_training_step_under_fp16_autocast_on_the_triton_path(name, launches, monkeypatch):
    """Under fp16 autocast the forward is the PyTorch path's bit for bit, and
    the gradient as near FP32's."""
    data = load_dataset("synthetic:400,1600,24,4")
    config = iexact.CompressionConfig()
    triton_loss, triton_grad = _step_gradients(name, data, config, torch.float16)
    assert launches["compress"] > 0 and launches["decompress"] > 0
    monkeypatch.setenv("IEXACT_KERNELS", "torch")
    torch_loss, torch_grad = _step_gradients(name, data, config, torch.float16)
    _, fp32_grad = _step_gradients(name, data, None, torch.float16)
    assert torch.equal(triton_loss, torch_loss)
    triton_error = ((triton_grad - fp32_grad).norm() / fp32_grad.norm()).item()
    torch_error = ((torch_grad - fp32_grad).norm() / fp32_grad.norm()).item()
    assert 0 < triton_error < 1.5 * torch_error + 0.05


def _step_gradients(name, data, config, autocast_dtype=None):
    torch.manual_seed(0)
    model = build_model(name, data.num_features, 4, layers=4 if name == "gcn2" else None)
    if config is not None:
        iexact.compress_(model, config)
    with torch.autocast("cpu", dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
        out = model(data.x, data.edge_index)
        labels = labels_of(data)
        loss = loss_function(out[data.train_mask], labels[data.train_mask])
    loss.backward()
    return loss.detach(), torch.cat([p.grad.flatten() for p in model.parameters()])


# the attention models' steps (11 s each, interpreted) are slow: their compressions run the same kernels as GAT's
STEP_MODELS = [
    pytest.param(name, marks=pytest.mark.slow) if name in ("gatv2", "transformer") else name for name in MODELS
]


@pytest.mark.parametrize("name", STEP_MODELS)
def test_one_training_step_of_every_model_on_the_triton_path(name, launches, monkeypatch):
    """The forward (the loss) is the PyTorch path's bit for bit; the gradient's error
    against FP32 is the PyTorch path's within the spread of one draw."""
    data = load_dataset("synthetic:400,1600,24,4")
    config = iexact.CompressionConfig()
    triton_loss, triton_grad = _step_gradients(name, data, config)
    assert launches["compress"] > 0 and launches["decompress"] > 0
    monkeypatch.setenv("IEXACT_KERNELS", "torch")
    torch_loss, torch_grad = _step_gradients(name, data, config)
    _, fp32_grad = _step_gradients(name, data, None)
    assert torch.equal(triton_loss, torch_loss)
    triton_error = ((triton_grad - fp32_grad).norm() / fp32_grad.norm()).item()
    torch_error = ((torch_grad - fp32_grad).norm() / fp32_grad.norm()).item()
    assert 0 < triton_error < 1.5 * torch_error + 0.05


def test_iexact_train_end_to_end_on_the_triton_path(launches, monkeypatch, tmp_path):
    argv = [
        "train",
        "--dataset",
        "synthetic:300,1200,16,4",
        "--hidden",
        "16",
        "--epochs",
        "2",
        "--quiet",
        "--seed",
        "3",
    ]
    assert main(argv + ["--json", str(tmp_path / "triton.json")]) == 0
    assert launches["compress"] > 0 and launches["decompress"] > 0
    monkeypatch.setenv("IEXACT_KERNELS", "torch")
    assert main(argv + ["--json", str(tmp_path / "torch.json")]) == 0
    forced, reference = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("triton", "torch"))
    # the same bytes, layer by layer (not the CPU profiler's allocator count: the interpreter's own buffers,
    # a constant few KiB whatever the number of calls, show in it)
    for key in ("total", "compressed", "uncompressed", "layers"):
        assert forced["activation_memory"][key] == reference["activation_memory"][key]
    assert abs(forced["test_accuracy"]["mean"] - reference["test_accuracy"]["mean"]) < 0.1


def _shape_only_kernels(monkeypatch, calls):
    """Kernels that record what they were given and return meta tensors of the right size."""

    def quantize_pack(z, mins, steps, block_size, bits, levels, *, seed=0, offset=0, noise=None):
        calls.append((z.numel(), mins.numel()))
        return torch.empty(math.ceil(z.numel() * bits / 8), dtype=torch.uint8, device=z.device)

    def unpack_dequantize(codes, mins, steps, block_size, bits, levels, numel):
        calls.append((numel, mins.numel()))
        return torch.empty(numel, dtype=torch.float32, device=codes.device)

    def compress_rows(rows, stored, *, stored_width, **layout):
        calls.append((rows.shape[0] * stored_width, stored[1].numel()))

    def decompress_rows(codes, mins, steps, out, *, stored_width, **layout):
        calls.append((out.shape[0] * stored_width, mins.numel()))

    monkeypatch.setattr(triton_quant, "quantize_pack", quantize_pack)
    monkeypatch.setattr(triton_quant, "unpack_dequantize", unpack_dequantize)
    monkeypatch.setattr(triton_codec, "compress_rows", compress_rows)
    monkeypatch.setattr(triton_codec, "decompress_rows", decompress_rows)


def test_tensors_past_2_to_the_31_are_split_into_int32_sized_launches(monkeypatch):
    """A meta tensor of 2**31 + 448 elements (nothing allocated) goes through the
    codec's Triton path in launches of at most 2**30 elements and whole blocks."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("IEXACT_KERNELS", "triton")
    calls = []
    _shape_only_kernels(monkeypatch, calls)
    x = torch.empty(2**25 + 7, 64, device="meta")
    config = iexact.CompressionConfig(rp_ratio=1, check_finite=False)
    packed = codec.compress(x, config, seed=1)
    assert sum(numel for numel, _ in calls) == x.numel() > 2**31
    assert max(numel for numel, _ in calls) <= codec.KERNEL_CHUNK_ELEMENTS
    assert all(numel % config.block_size == 0 for numel, _ in calls[:-1])
    assert sum(blocks for _, blocks in calls) == packed.mins.numel() == math.ceil(x.numel() / config.block_size)
    assert packed.codes.numel() == x.numel() // 4
    calls.clear()
    codec.decompress(packed, check=False)
    assert sum(numel for numel, _ in calls) == x.numel() and max(n for n, _ in calls) <= codec.KERNEL_CHUNK_ELEMENTS


def test_a_launch_past_2_to_the_31_is_refused():
    z = torch.empty(2**31, device="meta")
    with pytest.raises(ValueError, match="at most 2\\*\\*31 - 1 elements"):
        triton_quant.quantize_pack(z, z[:1], z[:1], 256, 2, (0.0, 1.0, 2.0, 3.0))


def test_kernel_noise_counters_use_all_64_bits_of_the_offset():
    """Philox counters are the element index plus the offset: an offset past 2**32
    must not wrap onto a small one."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    z = torch.rand(4096, generator=torch.Generator().manual_seed(0)).to(device)
    low, step = torch.zeros(16, device=device), torch.ones(16, device=device)
    levels = (0.0, 1.0, 2.0, 3.0)

    def codes(offset):
        return triton_quant.quantize_pack(z.clone(), low, step, 256, 2, levels, seed=5, offset=offset)

    assert not torch.equal(codes(2**33 + 7), codes(7))
    assert torch.equal(codes(2**33 + 7), codes(2**33 + 7))


def test_no_host_sync_in_the_compressed_codec_without_the_finite_check(monkeypatch):
    """On meta tensors any read of a value fails, so a compress and decompress on
    the Triton path that finish read nothing back from the device; the finite
    check (``check_finite=True``, the default) is the one read."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("IEXACT_KERNELS", "triton")
    _shape_only_kernels(monkeypatch, [])
    x = torch.empty(1000, 64, device="meta")
    for config in (
        iexact.CompressionConfig(check_finite=False),
        iexact.CompressionConfig(block_size="row", rp_ratio=1, check_finite=False),
    ):
        codec.decompress(codec.compress(x, config, seed=3), check=False)
    with pytest.raises(Exception, match="meta"):
        codec.compress(x, iexact.CompressionConfig(), seed=3)


class _NoLaunch:
    """A jitted Triton kernel that launches nothing: on meta tensors what it
    would write is already allocated, of the right size, by its launcher."""

    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


class _HostSyncs(TorchDispatchMode):
    """What a training step on the ``meta`` device (standing for a GPU) would
    make the host wait for, recorded with where in iexact it happens: a value
    read back (``aten._local_scalar_dense``, ``nonzero``, ``masked_select``,
    indexing by a boolean mask) and a copy from the host to the device
    (``_to_copy`` or ``copy_`` of a CPU tensor into a meta one). Reads return
    a stand-in so the step goes on and every one is counted. Host data given
    to ``torch.tensor`` for the device never reaches the dispatcher:
    :meth:`watch_constructors` wraps those functions too."""

    def __init__(self):
        super().__init__()
        self.found: list[tuple[str, str]] = []

    def _record(self, what: str) -> None:
        frames = [frame for frame in traceback.extract_stack() if "/iexact/" in frame.filename]
        where = f"{frames[-1].filename.rsplit('/iexact/', 1)[1]}:{frames[-1].lineno}" if frames else "?"
        self.found.append((what, where))

    def watch_constructors(self, monkeypatch) -> None:
        for name in ("tensor", "as_tensor"):
            monkeypatch.setattr(torch, name, self._watched(getattr(torch, name), name))

    def _watched(self, make, name: str):
        def constructor(*args, **kwargs):
            if torch.device(kwargs.get("device") or "cpu").type == "meta":
                self._record(f"torch.{name} of host data")
            return make(*args, **kwargs)

        return constructor

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [a for a in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)]
        on_device = any(t.is_meta for t in tensors)
        aten = torch.ops.aten
        if func is aten._local_scalar_dense.default and on_device:
            self._record("a value read back")
            return True if tensors[0].dtype == torch.bool else 0
        if func in (aten.nonzero.default, aten.masked_select.default) and on_device:
            self._record(f"{func.__name__.split('.')[0]} (a data-dependent shape)")
            return torch.empty(0, tensors[0].dim(), dtype=torch.int64, device="meta")
        indexing = func in (aten.index.Tensor, aten.index_put_.default, aten.index_put.default)
        masks = [i for i in args[1] if isinstance(i, torch.Tensor) and i.dtype == torch.bool] if indexing else []
        if masks and on_device:
            self._record("indexing by a boolean mask")
            return args[0] if func is not aten.index.Tensor else args[0].new_empty(0, *args[0].shape[1:])
        if func is aten._to_copy.default and tensors[0].device.type == "cpu" and kwargs.get("device") == META:
            self._record("a copy from the host")
        if func is aten.copy_.default and tensors[0].is_meta and tensors[1].device.type == "cpu":
            self._record("a copy from the host")
        return func(*args, **kwargs)


META = torch.device("meta")


def _step_on_meta(model, data, monkeypatch, check_finite: bool = False) -> list[tuple[str, str]]:
    """The host syncs (:class:`_HostSyncs`) of one compressed forward and
    backward of ``model`` on meta tensors, after one step that fills what is
    made once per device. iexact's operators run their real implementations
    (the codec on the Triton path with kernels that launch nothing, GCN
    normalization), not their shape functions; only the dropout-mask
    operators keep theirs (torch's generator has no meta device)."""
    from iexact.ops import codec as codec_ops
    from iexact.ops import graph as graph_ops

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("IEXACT_KERNELS", "triton")
    for module, kernel in [
        (triton_quant, "_quantize_pack_kernel"),
        (triton_quant, "_unpack_dequantize_kernel"),
        (triton_codec, "_compress_kernel"),
        (triton_codec, "_decompress_kernel"),
        (triton_codec, "_compress_dense_kernel"),
        (triton_codec, "_decompress_dense_kernel"),
        (triton_codec, "_transpose_products_kernel"),
    ]:
        monkeypatch.setattr(module, kernel, _NoLaunch())
    for module, operator in [
        (codec_ops, "_compress"),
        (codec_ops, "_decompress"),
        (codec_ops, "_transpose_products"),
        (graph_ops, "gcn_norm"),
    ]:
        monkeypatch.setattr(module, operator, getattr(module, operator)._init_fn)
    iexact.compress_(model, iexact.CompressionConfig(check_finite=check_finite))
    model = model.to(META)
    x, edge_index = data.x.to(META), data.edge_index.to(META)
    with _HostSyncs():  # the warm-up step (its one finite-check read answered)
        model(x, edge_index).sum().backward()
    syncs = _HostSyncs()
    syncs.watch_constructors(monkeypatch)
    with syncs:
        model(x, edge_index).sum().backward()
    assert all(p.grad is not None and p.grad.is_meta for p in model.parameters())
    return syncs.found


@pytest.mark.parametrize("name", MODELS)
def test_no_host_sync_in_a_compressed_training_step(name, monkeypatch):
    """Every reference model, forward and backward (see :func:`_step_on_meta`),
    without the finite check (which reads one flag back per compress)."""
    data = load_dataset("synthetic:400,1600,24,4")
    torch.manual_seed(0)
    model = build_model(name, data.num_features, 4, layers=4 if name == "gcn2" else None)
    assert _step_on_meta(model, data, monkeypatch) == []


@pytest.mark.parametrize("name", MODELS)
def test_the_finite_check_is_one_read_per_training_step(name, monkeypatch):
    """With ``check_finite=True`` (the default) every compression's check stays
    on the device and the model's forward reads them all once
    (:mod:`iexact.nn.finite_checks`): one sync per step, however many tensors."""
    data = load_dataset("synthetic:400,1600,24,4")
    torch.manual_seed(0)
    model = build_model(name, data.num_features, 4, layers=4 if name == "gcn2" else None)
    assert [what for what, _ in _step_on_meta(model, data, monkeypatch, check_finite=True)] == ["a value read back"]


@pytest.mark.parametrize("conv", ["ChebConv", "ResGatedGraphConv"])
def test_no_host_sync_in_the_other_handled_convs(conv, monkeypatch):
    """Two layers of each handled conv that no reference model has (see :func:`_step_on_meta`):
    ChebConv's Laplacian included, built from the graph on the device."""
    data = load_dataset("synthetic:400,1600,24,4")
    torch.manual_seed(0)
    layer = {"ChebConv": lambda i, o: ChebConv(i, o, K=3), "ResGatedGraphConv": ResGatedGraphConv}[conv]
    model = Sequential(
        "x, edge_index", [(layer(24, 16), "x, edge_index -> x"), torch.nn.ReLU(), (layer(16, 4), "x, edge_index -> x")]
    )
    assert _step_on_meta(model, data, monkeypatch) == []


def test_the_sync_detector_sees_every_kind_of_sync(monkeypatch):
    """Each kind :class:`_HostSyncs` looks for, planted once (the levels table
    was one such copy per compressed tensor before it was made once per device)."""
    syncs = _HostSyncs()
    syncs.watch_constructors(monkeypatch)
    x = torch.empty(4, 3, device=META)
    with syncs:
        torch.tensor([0.0, 1.0], device=META)
        torch.ones(3).to(META)
        x[0].copy_(torch.ones(3))
        x.sum().item()
        x.nonzero()
        x[torch.ones(4, dtype=torch.bool, device=META)]
    assert [what for what, _ in syncs.found] == [
        "torch.tensor of host data",
        "a copy from the host",
        "a copy from the host",
        "a value read back",
        "nonzero (a data-dependent shape)",
        "indexing by a boolean mask",
    ]


def test_a_non_finite_input_without_the_check_reaches_the_output_as_nan():
    x = torch.randn(64, 32)
    x[3, 5] = float("nan")
    config = iexact.CompressionConfig(check_finite=False, rp_ratio=1, block_size=64)
    packed = codec.compress(x, config, seed=0)
    restored = codec.decompress(packed, check=False)  # as training decompresses (iexact.ops.codec)
    flat = restored.view(-1)  # x[3, 5] is element 101, in block 1
    assert flat[64:128].isnan().all() and flat[:64].isfinite().all() and flat[128:].isfinite().all()
    with pytest.raises(ValueError, match="PackedActivation.steps is invalid: it holds NaN or Inf"):
        codec.decompress(packed)  # checked: the damaged block is named
    with pytest.raises(ValueError, match="NaN or Inf"):
        codec.compress(x, dataclasses.replace(config, check_finite=True), seed=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", MODELS)
def test_no_host_sync_on_cuda(name):  # pragma: no cover - runs where a GPU is lent
    """The compressed forward under ``torch.cuda.set_sync_debug_mode("error")``."""
    data = load_dataset("synthetic:400,1600,24,4").to("cuda")
    model = build_model(name, data.num_features, 4, layers=4 if name == "gcn2" else None).cuda()
    iexact.compress_(model, iexact.CompressionConfig(check_finite=False))
    model(data.x, data.edge_index)  # warm-up: Triton compiles, caches fill
    torch.cuda.set_sync_debug_mode("error")
    try:
        model(data.x, data.edge_index)
    finally:
        torch.cuda.set_sync_debug_mode("default")
