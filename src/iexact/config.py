r"""Compression settings: one frozen, validated dataclass passed explicitly.

A :class:`CompressionConfig` says how every saved activation is stored:
random projection of the feature axis by ``rp_ratio``, then block-wise
stochastic quantization to ``bits`` bits per element with one ``(min, step)``
pair per block of ``block_size`` elements, rounded onto ``levels``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from collections.abc import Mapping
from itertools import pairwise
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import torch

BlockSize = int | str

ALLOWED_BITS = (1, 2, 4, 8)
MAX_BLOCK_SIZE = 2**31 - 1  # block indices and in-block offsets are int32 in the kernels
ALLOWED_LEVELS = ("uniform", "optimal", "calibrated")  # or an explicit tuple of 2**bits values
ALLOWED_PROJECTIONS = ("shared", "per_row", "sketch")  # the kinds iexact.quant.projection builds
ALLOWED_DROPOUT_MASKS = ("auto", "bits", "seed")
ATTENTION_WEIGHT_BITS = 4
r"""The fewest bits attention weights per edge and head are kept at
(:attr:`CompressionConfig.attention_weights`): the logits' gradient
:math:`\alpha_e (\delta_e - \bar\delta_t)` is a difference of close terms,
so the weights' noise weighs more than the features' (GATv2 on the model
families' graph, ``iexact bench memory --models``: gradient error 0.333 with
the weights exact, 0.350 at 4 bits, 0.607 at 2; 26.1×, 43.1× and 48.5× less
than FP32)."""
HALVED_GATE_BITS = 2
r"""ResGatedGraphConv keeps two draws per edge and channel (its gates and their
derivatives: an unbiased backward needs both,
:class:`~iexact.autograd.GatedMessageFunction`). A config of this many bits
keeps each at half its bits in blocks twice as long
(:attr:`CompressionConfig.gates`), so that the two take the codes and scales
one tensor would; 1 bit has nothing to halve, and 4 or 8 bits keep both at
the config's width (a config asking for precision, not memory). Both are
bounded, smooth functions of the logits, and their noise weighs little in
the gradient (the model families' graph, ``iexact bench memory --models``:
gradient error 0.062 with 2 bits each in blocks of 128, 0.115 with 1 bit in
blocks of 256; 14.5× and 25.5× less than FP32)."""
CONFIG_VERSION = 4
"""The version :meth:`CompressionConfig.to_dict` writes: 1 when records began
to carry one, with the nine fields ``bits`` ... ``check_finite``; 2 with
``center``; 3 with ``rp_edge_convs``; 4 with ``dropout_masks``. Adding or
changing the meaning of a field raises it, and
:meth:`CompressionConfig.from_dict` upgrades every older version explicitly."""

ADDED_SINCE_VERSION_3: Mapping[str, Any] = MappingProxyType({"dropout_masks": "seed"})
"""Fields a version-3 record lacks, with what their absence meant when it was
written: every dropout mask redrawn from a generator snapshot in backward."""

ADDED_SINCE_VERSION_2: Mapping[str, Any] = MappingProxyType({"rp_edge_convs": True} | dict(ADDED_SINCE_VERSION_3))
"""Fields a version-2 record lacks, with what their absence meant when it was
written: the node features of the convs keeping tensors per edge projected
like every linear input (a plan or record of then keeps its bytes and noise),
dropout masks redrawn."""

ADDED_SINCE_VERSION_1: Mapping[str, Any] = MappingProxyType({"center": False} | dict(ADDED_SINCE_VERSION_2))
"""Fields a version-1 record lacks, with what their absence meant when it was
written: no centering, projected edge-conv inputs, dropout masks redrawn."""

ADDED_SINCE_VERSION_0: Mapping[str, Any] = MappingProxyType(
    {"rp_norm": False, "projection": "shared", "reference_inputs": False, "check_finite": True}
    | dict(ADDED_SINCE_VERSION_1)
)
"""Fields an unversioned record may lack, with what their absence meant when it
was written: BatchNorm inputs unprojected, EXACT's shared projection, inputs
compressed like every other tensor, the finite check on, no centering,
projected edge-conv inputs, dropout masks redrawn."""

SCALE_DTYPES = {
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float32": torch.float32,
}


def _invalid(field: str, value, allowed: str) -> ValueError:
    return ValueError(f"CompressionConfig.{field}={value!r} is invalid: {field} must be {allowed}")


@dataclasses.dataclass(frozen=True)
class CompressionConfig:
    r"""How saved activations are compressed.

    A saved activation :math:`H \in \mathbb{R}^{N \times D}` is stored as

    .. math::
        Z = H P, \quad P \in \{\pm 1/\sqrt{k}\}^{D \times k},\;
        k = \lceil D / R \rceil

    (skipped when ``rp_ratio == 1`` or :math:`k \ge D`), then :math:`Z` is
    flattened row-major, cut into blocks of :math:`G` elements, and every
    element becomes a ``bits``-bit code of its block's range
    :math:`[m, M]` on the normalized axis :math:`u = (z - m) B / (M - m)`,
    :math:`B = 2^b - 1`.

    Args:
        bits (int, optional): bits per stored element, one of 1, 2, 4, 8.
            (default: :obj:`2`)
        block_size (int or str, optional): elements per quantization block
            :math:`G`, or ``"row"`` for one block per (projected) row as in
            EXACT. (default: :obj:`128`)
        rp_ratio (float, optional): random-projection ratio :math:`R \ge 1`;
            ``1`` disables the projection. (default: :obj:`4`)
        levels (str or tuple, optional): ``"uniform"`` (:math:`\ell_i = i`),
            ``"optimal"`` (minimal expected rounding variance under the
            clipped-normal model, see :func:`iexact.quant.optimal_levels`),
            ``"calibrated"`` (optimal until :func:`iexact.calibrate_` fits
            each module's own levels to its activations) or the levels
            themselves: :math:`2^b` increasing floats from 0 to :math:`B`
            (what calibration gives a module).
            (default: :obj:`"optimal"`)
        scale_dtype (torch.dtype or str, optional): dtype of the per-block
            min and step: ``torch.bfloat16``, ``torch.float16`` or
            ``torch.float32`` (or their names). (default: :obj:`torch.bfloat16`)
        rp_norm (bool, optional): also project the inputs that batch
            normalization keeps. Its backward needs them element by element,
            so the projection's variance reaches every input gradient; with a
            row-wise projection that noise averages out of the weight
            gradients like the rest. (default: :obj:`True`)
        rp_edge_convs (bool, optional): also project the node features that
            the convs keeping tensors per edge (``GATConv``, ``GATv2Conv``,
            ``TransformerConv``, ``ResGatedGraphConv``: attention or gates
            per edge and channel or head; ``EdgeConv``: its network's
            activations per edge; ``PNAConv``: its towers' messages) keep
            for their linear maps, and the
            modules of a ``GENConv`` that compute on its nodes (its MLP and
            linear maps, beside its per-edge softmax). Those per-edge
            tensors are most of what such a conv stores, so projecting its
            node features saves a few percent of its bytes for about three
            times the gradient error (measured on the model families,
            ``iexact bench memory --models``); ``False`` stores them
            unprojected at ``bits``. (default: :obj:`False`)
        projection (str, optional): ``"shared"`` (one dense Rademacher
            :math:`P` for every row, as EXACT and i-Exact), ``"per_row"``
            (random signs per row before the same :math:`P`) or ``"sketch"``
            (a count sketch with random signs per row, :math:`O(D)` per row);
            see :mod:`iexact.quant.projection`. Only the shared kind's error
            is common to all rows, so only it does not average out of a
            weight gradient. (default: :obj:`"sketch"`)
        reference_inputs (bool, optional): keep a tensor that no op of the
            graph produced (the caller's own input, such as ``data.x``) by
            reference, as FP32 autograd does, instead of compressing it: the
            caller holds it anyway, so this costs no bytes and adds no noise.
            (default: :obj:`True`)
        check_finite (bool, optional): raise a ``ValueError`` when a tensor
            to compress holds NaN or Inf. The check reads flags back from the
            device: once per forward of a model :func:`iexact.compress_`
            converted, for all its compressions (a host sync per step,
            :mod:`iexact.nn.finite_checks`), once per compression for a
            converted module called on its own; with
            ``False`` there is none, and a non-finite value instead makes its
            whole block decompress to NaN, so it reaches the gradients as it
            would uncompressed (check the loss or the gradients): under
            fp16 autocast with a ``GradScaler``, a forward that overflows
            fp16 then skips its step as it would without iexact. (Gradients
            that overflow in backward, the scaler's usual case, never meet
            the check.) (default: :obj:`True`)
        center (bool, optional): store a projected tensor of at least 64
            rows centered: :math:`H - \mathbf 1 c^\top` compressed, the column
            center :math:`c` (a sampled mean, float32) kept exactly and added
            back (:func:`iexact.codec.column_center`). Unbiased either way;
            the projection's noise then grows with the rows' spread, not
            with their common offset (post-ReLU features have a large one).
            :math:`4D` bytes per tensor. Unprojected tensors are never
            centered (it would move a ReLU's exact zeros off the levels).
            ``False`` for the papers' presets, as they stored. (default: :obj:`True`)
        dropout_masks (str, optional): how a dropout (``torch.nn.Dropout``,
            ``F.dropout`` in a model's own code, the one after a ReLU or
            LeakyReLU, and that of the attention weights of the attention
            convs and ``MultiheadAttention``) hands its keep-mask to
            backward: ``"seed"`` keeps a snapshot of torch's generator and
            redraws the mask (0 bits per element; after a ReLU the signs of
            the kept elements, :math:`\approx (1 - p)` bits), ``"bits"``
            keeps the mask (1 bit per element; after a ReLU the one bit
            "kept and positive", the ReLU's signs included), ``"auto"`` the
            bits on CPU and the seed elsewhere. The mask is torch's own draw
            either way, so the gradients are the same bit for bit; only the
            bytes and the time differ. On CPU the redraw is torch's serial
            Mersenne Twister, one float64 per element (1.0 ms for a
            2,708 × 128 activation on this project's 2-core machine, more
            than that layer's ReLU, dropout and matmul backward together);
            CUDA's Philox redraws at memory speed. (default: :obj:`"auto"`)

    Stored bytes for an :math:`N \times D` activation: :math:`\lceil N k b / 8
    \rceil` for the codes plus :math:`2 \cdot \mathrm{sizeof(scale)}` per block
    plus :math:`4D` for the center plus 8 for the projection seed.
    """

    bits: int = 2
    block_size: BlockSize = 128
    rp_ratio: float = 4
    levels: str | tuple[float, ...] = "optimal"
    scale_dtype: torch.dtype = torch.bfloat16
    rp_norm: bool = True
    rp_edge_convs: bool = False
    projection: str = "sketch"
    reference_inputs: bool = True
    check_finite: bool = True
    center: bool = True
    dropout_masks: str = "auto"
    if TYPE_CHECKING:  # set in __post_init__, not fields (declared here for the type checker only)
        _record_json: str = dataclasses.field(init=False)
        _unprojected: CompressionConfig = dataclasses.field(init=False)
        _attention_weights: CompressionConfig = dataclasses.field(init=False)
        _gates: CompressionConfig = dataclasses.field(init=False)
        _batch_norm_inputs: CompressionConfig = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self._validate()
        # derived once, here: a compiled graph then reads them as attributes, never builds them
        self._derive()

    def _validate(self) -> None:
        """Check every field (normalizing ``scale_dtype`` and explicit levels)
        and record the config as JSON and unprojected."""
        if type(self.bits) is not int or self.bits not in ALLOWED_BITS:
            raise _invalid("bits", self.bits, "one of 1, 2, 4, 8")
        block = self.block_size
        if isinstance(block, str):
            if block != "row":
                raise _invalid("block_size", block, 'a positive int or "row"')
        elif isinstance(block, bool) or not isinstance(block, int) or not 1 <= block <= MAX_BLOCK_SIZE:
            raise _invalid("block_size", block, 'a positive int up to 2**31 - 1 or "row"')
        ratio = self.rp_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio) or ratio < 1:
            raise _invalid("rp_ratio", ratio, "a finite number >= 1 (1 = no projection)")
        if isinstance(self.levels, (tuple, list)):
            self._check_explicit_levels()
        elif self.levels not in ALLOWED_LEVELS:
            raise _invalid(
                "levels",
                self.levels,
                'one of "uniform", "optimal", "calibrated" or a tuple of '
                "2**bits increasing floats from 0 to 2**bits - 1",
            )
        scale = self.scale_dtype
        if isinstance(scale, str) and scale in SCALE_DTYPES:
            object.__setattr__(self, "scale_dtype", SCALE_DTYPES[scale])
        elif scale not in SCALE_DTYPES.values():
            raise _invalid("scale_dtype", scale, "torch.bfloat16, torch.float16 or torch.float32")
        for flag in ("rp_norm", "rp_edge_convs", "reference_inputs", "check_finite", "center"):
            if not isinstance(getattr(self, flag), bool):
                raise _invalid(flag, getattr(self, flag), "True or False")
        if self.projection not in ALLOWED_PROJECTIONS:
            raise _invalid("projection", self.projection, 'one of "shared", "per_row", "sketch"')
        if self.dropout_masks not in ALLOWED_DROPOUT_MASKS:
            raise _invalid("dropout_masks", self.dropout_masks, 'one of "auto", "bits", "seed"')
        object.__setattr__(self, "_record_json", json.dumps(self.to_dict(), sort_keys=True))
        object.__setattr__(self, "_unprojected", self if self.rp_ratio == 1 else dataclasses.replace(self, rp_ratio=1))

    def _derive(self) -> None:
        """Set the configs of :attr:`attention_weights`, :attr:`gates` and
        :attr:`batch_norm_inputs`. Those derive their own only when asked
        (:meth:`_derived`): derived eagerly, at least 4 bits and half the bits
        would make each other without end."""
        unprojected = self._unprojected
        normalized = self if self.rp_norm else unprojected
        uncentered = dataclasses.replace(normalized, center=False) if normalized.center else normalized
        object.__setattr__(self, "_batch_norm_inputs", uncentered)
        attention = max(self.bits, ATTENTION_WEIGHT_BITS)
        object.__setattr__(self, "_attention_weights", self._at_bits(unprojected, attention))
        share = 2 if self.bits == HALVED_GATE_BITS else 1
        block = self.block_size if isinstance(self.block_size, str) else min(share * self.block_size, MAX_BLOCK_SIZE)
        object.__setattr__(self, "_gates", self._at_bits(unprojected, self.bits // share, block))

    @staticmethod
    def _at_bits(config: CompressionConfig, bits: int, block_size: BlockSize | None = None) -> CompressionConfig:
        """``config`` at ``bits`` bits (explicit levels, which are per bit width,
        then the optimal ones) and ``block_size`` (``None``: its own), its own
        derived configs left to :meth:`_derived`."""
        block_size = config.block_size if block_size is None else block_size
        if (config.bits, config.block_size) == (bits, block_size):
            return config
        derived = copy.copy(config)
        for name in ("_attention_weights", "_gates", "_batch_norm_inputs"):
            derived.__dict__.pop(name, None)
        object.__setattr__(derived, "bits", bits)
        object.__setattr__(derived, "block_size", block_size)
        object.__setattr__(derived, "levels", config.levels if isinstance(config.levels, str) else "optimal")
        derived._validate()
        return derived

    def _derived(self, name: str) -> CompressionConfig:
        """The derived config ``name``, set by :meth:`_derive` now if it was not yet."""
        if name not in self.__dict__:
            self._derive()
        return self.__dict__[name]

    def _check_explicit_levels(self) -> None:
        top = 2**self.bits - 1
        try:
            levels = tuple(float(value) for value in self.levels)
        except (TypeError, ValueError):
            raise _invalid("levels", self.levels, "floats") from None
        if (
            len(levels) != top + 1
            or levels[0] != 0
            or levels[-1] != top
            or any(b <= a for a, b in pairwise(levels))
            or not all(map(math.isfinite, levels))
        ):
            raise _invalid("levels", self.levels, f"{top + 1} increasing floats from 0 to {top} for {self.bits} bits")
        object.__setattr__(self, "levels", levels)

    @property
    def record_json(self) -> str:
        """:meth:`to_dict` as JSON with sorted keys: how a config crosses a
        ``torch.library`` operator's boundary (:mod:`iexact.ops.codec`)."""
        return self._record_json

    @property
    def edge_conv_inputs(self) -> CompressionConfig:
        """How the convs keeping tensors per edge keep their node features:
        this config with ``rp_edge_convs``, :attr:`unprojected` without."""
        return self if self.rp_edge_convs else self._unprojected

    @property
    def attention_weights(self) -> CompressionConfig:
        """How attention weights per edge and head are kept (``GATv2Conv``,
        ``TransformerConv``): :attr:`unprojected`, at least
        :data:`ATTENTION_WEIGHT_BITS` bits."""
        return self._derived("_attention_weights")

    @property
    def gates(self) -> CompressionConfig:
        """How ``ResGatedGraphConv`` keeps its gates and their derivatives (two
        values per edge and channel): :attr:`unprojected`; at
        :data:`HALVED_GATE_BITS` bits, half the bits in blocks twice as long,
        so that the two take the codes and scales one tensor would."""
        return self._derived("_gates")

    @property
    def batch_norm_inputs(self) -> CompressionConfig:
        r"""How ``BatchNorm1d`` keeps its normalized input :math:`\hat X`: this
        config with ``rp_norm``, :attr:`unprojected` without, and never
        centered. :math:`\hat X`'s columns have mean 0 exactly, so a stored
        center (the mean of sampled rows, :func:`iexact.codec.column_center`)
        would be that sample's noise: :math:`4C` bytes and two passes over
        :math:`\hat X` that add the noise's square to the sketch's variance
        instead of removing an offset."""
        return self._derived("_batch_norm_inputs")

    @property
    def unprojected(self) -> CompressionConfig:
        """This config without the projection (``rp_ratio=1``): how element-wise
        tensors are stored (``self`` when it projects nothing)."""
        return self._unprojected

    def keeps_dropout_bits(self, device: torch.device) -> bool:
        """Whether a dropout on ``device`` keeps its mask as bits
        (``dropout_masks``: ``"bits"``, or ``"auto"`` on CPU) rather than a
        generator snapshot to redraw it from."""
        return self.dropout_masks == "bits" or (self.dropout_masks == "auto" and device.type == "cpu")

    def block_elements(self, row_width: int) -> int:
        """Elements per block for rows of ``row_width`` (projected) elements."""
        return max(row_width, 1) if isinstance(self.block_size, str) else self.block_size

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain JSON values (``scale_dtype`` by name) and the
        record's ``"version"`` (:data:`CONFIG_VERSION`); :meth:`from_dict` inverts it."""
        record: dict[str, Any] = {"version": CONFIG_VERSION}
        record.update((field.name, getattr(self, field.name)) for field in dataclasses.fields(self))
        record["scale_dtype"] = str(self.scale_dtype).removeprefix("torch.")
        if isinstance(self.levels, tuple):
            record["levels"] = list(self.levels)
        return record

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> CompressionConfig:
        """The config :meth:`to_dict` wrote, of this version or an older one.

        A record of version :data:`CONFIG_VERSION` names every field. One with
        no ``"version"`` was written before records carried one (version 0):
        its fields are this version's, less those added since, which are read
        as what their absence meant then (:data:`ADDED_SINCE_VERSION_0`); one
        of version 1 lacks ``center`` and ``rp_edge_convs``
        (:data:`ADDED_SINCE_VERSION_1`), one of version 2 ``rp_edge_convs``
        and ``dropout_masks`` (:data:`ADDED_SINCE_VERSION_2`), one of version
        3 ``dropout_masks`` (:data:`ADDED_SINCE_VERSION_3`).

        Raises:
            ValueError: a version that is not an integer, or newer than this
                iexact reads; an unknown or missing field (named, with the
                expected ones); an invalid value.
        """
        if not isinstance(record, Mapping):
            raise ValueError(f"a CompressionConfig record is a mapping of its fields, got {type(record).__name__}")
        fields = dict(record)
        version = fields.pop("version", 0)
        if type(version) is not int or version < 0:
            raise ValueError(f"CompressionConfig record version {version!r} is invalid: expected an integer >= 0")
        if version > CONFIG_VERSION:
            raise ValueError(
                f"CompressionConfig record version {version} is newer than this iexact reads "
                f"(up to {CONFIG_VERSION}): upgrade iexact to read it"
            )
        added = {
            0: ADDED_SINCE_VERSION_0,
            1: ADDED_SINCE_VERSION_1,
            2: ADDED_SINCE_VERSION_2,
            3: ADDED_SINCE_VERSION_3,
        }.get(version, {})
        fields = {**added, **fields}
        known = [field.name for field in dataclasses.fields(cls)]
        unknown, missing = sorted(set(fields) - set(known)), [name for name in known if name not in fields]
        problems = [
            f"{what} field(s) {', '.join(names)}"
            for what, names in (("unknown", unknown), ("missing", missing))
            if names
        ]
        if problems:
            raise ValueError(
                f"CompressionConfig record (version {version}): {'; '.join(problems)}; expected {', '.join(known)}"
            )
        return cls(**fields)

    def __str__(self) -> str:
        block = "one block per row" if self.block_size == "row" else f"blocks of {self.block_size}"
        projection = "no projection" if self.rp_ratio == 1 else f"{self.projection} projection {self.rp_ratio:g}"
        norm = (", projected norm inputs" if self.rp_norm else "") + (
            ", projected edge-conv inputs" if self.rp_edge_convs else ""
        )
        inputs = "" if self.reference_inputs else ", inputs compressed too"
        finite = ("" if self.check_finite else ", no finite check") + ("" if self.center else ", uncentered")
        finite += "" if self.dropout_masks == "auto" else f", dropout masks as {self.dropout_masks}"
        levels = (
            self.levels
            if isinstance(self.levels, str)
            else ("calibrated (" + ", ".join(f"{value:.3g}" for value in self.levels) + ")")
        )
        return (
            f"INT{self.bits}, {block}, {projection}, {levels} levels, "
            f"{str(self.scale_dtype).removeprefix('torch.')} scales{norm}{inputs}{finite}"
        )

    @classmethod
    def exact(cls) -> CompressionConfig:
        """EXACT (Liu et al., 2022): INT2, one block per row, projection 8, uniform levels, uncentered."""
        return PRESETS["exact"]

    @classmethod
    def iexact(cls) -> CompressionConfig:
        """Block-wise EXACT (Eliassen & Selvan, 2023): INT2, blocks of 1024, projection 8, optimal levels,
        uncentered."""
        return PRESETS["iexact"]

    @classmethod
    def preset(cls, name: str) -> CompressionConfig:
        """The preset called ``name``, one of :data:`PRESETS`."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}: expected one of {', '.join(sorted(PRESETS))}")
        return PRESETS[name]


PRESETS: Mapping[str, CompressionConfig] = MappingProxyType(
    {
        "exact": CompressionConfig(
            bits=2,
            block_size="row",
            rp_ratio=8,
            levels="uniform",
            rp_norm=False,
            rp_edge_convs=True,
            projection="shared",
            reference_inputs=False,
            center=False,
        ),
        "iexact": CompressionConfig(
            bits=2,
            block_size=1024,
            rp_ratio=8,
            levels="optimal",
            rp_norm=False,
            rp_edge_convs=True,
            projection="shared",
            reference_inputs=False,
            center=False,
        ),
        "default": CompressionConfig(),
        "compact": CompressionConfig(rp_ratio=8),
    }
)
"""Every named configuration, read-only: the papers' two (``exact``, ``iexact``), the
library default, and ``compact`` (projection 8: about 1.35x fewer bytes than the
default, more gradient noise). The README's gradient-error table is the measurement."""
