r"""What an experiment trains: :class:`Settings`, and the :class:`RunKind` it is.

Settings are everything a resumed run must share with the original: a
checkpoint holds them (:meth:`Settings.to_dict`) and refuses a resume with
other ones; ``iexact bench train`` hands them to each child process.
"""

from __future__ import annotations

import dataclasses
import enum

from ..config import CompressionConfig
from .batching import Batching
from .precision import PRECISIONS


class RunKind(str, enum.Enum):
    """How a run keeps its activations for backward."""

    FP32 = "fp32"  # as PyTorch does: uncompressed
    CHECKPOINTED = "checkpoint"  # torch.utils.checkpoint around every message-passing layer
    COMPRESSED = "compressed"  # one CompressionConfig for every module
    PLANNED = "plan"  # an iexact plan: a base config and one config per module

    @property
    def compressed(self) -> bool:
        """Whether runs of this kind carry a :class:`~iexact.CompressionConfig`."""
        return self in (RunKind.COMPRESSED, RunKind.PLANNED)


@dataclasses.dataclass(frozen=True)
class Settings:
    """What an experiment trains: everything a resumed run must share with the original.

    ``kind`` says how activations are kept, ``label`` names the run in
    progress bars and tables (a preset's name, a bench variant's), ``config``
    is the :class:`~iexact.CompressionConfig` of compressed and planned runs
    (``None`` otherwise) and ``module_configs`` a plan's configs by module
    name. ``layers``, ``hidden`` and ``dropout`` override the reference
    model's (``None``: its own); ``batching`` is ``None`` for full batch;
    ``precision`` the steps' mixed precision (:mod:`~iexact.experiments.precision`).
    """

    dataset: str
    model: str
    kind: RunKind
    label: str
    config: CompressionConfig | None
    layers: int | None = None
    hidden: int | None = None
    dropout: float | None = None
    lr: float = 0.01
    weight_decay: float = 0.0
    grad_clip: float | None = 0.5
    seed: int = 0
    batching: Batching | None = None
    graph: str = "edge_index"  # or "csr" (data.with_layout)
    module_configs: tuple[tuple[str, CompressionConfig], ...] = ()
    precision: str = "32"  # or "bf16", "fp16" (iexact.experiments.precision)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r} is invalid: use one of {', '.join(PRECISIONS)}")
        object.__setattr__(self, "kind", RunKind(self.kind))
        object.__setattr__(self, "module_configs", tuple(self.module_configs))
        if self.kind.compressed != (self.config is not None):
            raise ValueError(f"a {self.kind.value} run {'needs' if self.kind.compressed else 'takes no'} config")
        if self.module_configs and self.kind is not RunKind.PLANNED:
            raise ValueError(f"per-module configs belong to a plan run, not a {self.kind.value} run")

    def to_dict(self) -> dict:
        """The settings as plain JSON values (the configs as their versioned
        records), for checkpoints, result records and child processes."""
        record = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        record["kind"] = self.kind.value
        record["config"] = None if self.config is None else self.config.to_dict()
        record["batching"] = None if self.batching is None else self.batching.to_dict()
        record["module_configs"] = {name: config.to_dict() for name, config in self.module_configs}
        return record

    @classmethod
    def from_dict(cls, record: dict) -> Settings:
        """Inverse of :meth:`to_dict`; also reads the records of iexact 0.1's
        checkpoint format 4, which named the kind by ``config_name`` (``"fp32"``,
        ``"checkpoint"``, ``"plan"`` or a preset's name, then the label)."""
        record = dict(record)
        if "config_name" in record:
            name = record.pop("config_name")
            record["kind"] = name if name in {kind.value for kind in RunKind} else RunKind.COMPRESSED
            record["label"] = name
        config = record.get("config")
        return cls(
            **{
                **record,
                "config": None if config is None else CompressionConfig.from_dict(config),
                "batching": Batching.from_dict(record.get("batching")),
                "module_configs": tuple(
                    (name, CompressionConfig.from_dict(module))
                    for name, module in record.get("module_configs", {}).items()
                ),
            }
        )

    def variant(self, kind: RunKind, label: str, config: CompressionConfig | None) -> Settings:
        """These settings with another kind, label and config (a bench row)."""
        return dataclasses.replace(self, kind=kind, label=label, config=config, module_configs=())
