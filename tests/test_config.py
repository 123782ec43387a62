import pytest
import torch

from iexact import PRESETS, CompressionConfig


def test_presets_match_the_papers():
    exact = CompressionConfig.exact()
    assert (exact.bits, exact.block_size, exact.rp_ratio, exact.levels) == (2, "row", 8, "uniform")
    iexact = CompressionConfig.iexact()
    assert (iexact.bits, iexact.block_size, iexact.rp_ratio, iexact.levels) == (2, 1024, 8, "optimal")
    assert CompressionConfig.default() == CompressionConfig()
    assert CompressionConfig.preset("iexact") == iexact


def test_scale_dtype_by_name():
    assert CompressionConfig(scale_dtype="float16").scale_dtype is torch.float16


@pytest.mark.parametrize(
    "field, value",
    [
        ("bits", 3),
        ("bits", 0),
        ("bits", True),
        ("bits", 2.0),
        ("block_size", 0),
        ("block_size", -4),
        ("block_size", "rows"),
        ("block_size", 1.5),
        ("rp_ratio", 0.5),
        ("rp_ratio", float("nan")),
        ("rp_ratio", "8"),
        ("levels", "nonuniform"),
        ("scale_dtype", torch.int8),
        ("scale_dtype", "float64"),
    ],
)
def test_invalid_values_name_field_value_and_allowed(field, value):
    with pytest.raises(ValueError) as info:
        CompressionConfig(**{field: value})
    message = str(info.value)
    assert field in message and repr(value) in message and "must be" in message


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset 'int3'.*default, exact, iexact"):
        CompressionConfig.preset("int3")


def test_block_elements():
    assert CompressionConfig(block_size="row").block_elements(16) == 16
    assert CompressionConfig(block_size=64).block_elements(16) == 64


def test_presets_are_one_registry():
    assert set(PRESETS) == {"exact", "iexact", "default", "compact"}
    for name, config in PRESETS.items():
        assert CompressionConfig.preset(name) is config
    with pytest.raises(TypeError):
        PRESETS["mine"] = CompressionConfig()  # read-only


@pytest.mark.parametrize(
    "config",
    [*PRESETS.values(), CompressionConfig(bits=8, block_size=7, rp_ratio=2.5, scale_dtype=torch.float32, rp_norm=True)],
)
def test_dict_round_trip_is_plain_json(config):
    import json

    record = config.to_dict()
    assert json.loads(json.dumps(record)) == record
    assert CompressionConfig.from_dict(record) == config
    assert CompressionConfig.from_dict({}) == CompressionConfig()


def test_from_dict_names_unknown_fields():
    with pytest.raises(ValueError, match="unknown CompressionConfig field\\(s\\) bitz: expected some of bits"):
        CompressionConfig.from_dict({"bitz": 2})
    with pytest.raises(ValueError, match="bits must be one of"):
        CompressionConfig.from_dict({"bits": 3})


def test_str_spells_out_the_config():
    assert str(PRESETS["exact"]) == (
        "INT2, one block per row, shared projection 8, uniform levels, bfloat16 scales, inputs compressed too"
    )
    assert str(CompressionConfig(bits=4, rp_ratio=1, rp_norm=False)) == (
        "INT4, blocks of 256, no projection, optimal levels, bfloat16 scales"
    )
    assert str(CompressionConfig()) == (
        "INT2, blocks of 256, sketch projection 4, optimal levels, bfloat16 scales, projected norm inputs"
    )


def test_explicit_levels_are_validated_and_round_trip():
    config = CompressionConfig(levels=[0, 0.8, 1.6, 3])
    assert config.levels == (0.0, 0.8, 1.6, 3.0)
    assert CompressionConfig.from_dict(config.to_dict()) == config
    assert "calibrated (0, 0.8, 1.6, 3) levels" in str(config)
    assert CompressionConfig(levels="calibrated").levels == "calibrated"
    for bad in (
        (0.0, 1.0, 3.0),
        (0.0, 2.0, 1.0, 3.0),
        (0.5, 1.0, 2.0, 3.0),
        (0.0, 1.0, 2.0, 4.0),
        (0.0, float("nan"), 2.0, 3.0),
    ):
        with pytest.raises(ValueError, match="levels must be 4 increasing floats from 0 to 3 for 2 bits"):
            CompressionConfig(levels=bad)
