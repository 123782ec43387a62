import dataclasses
import json
import pickle

import pytest
import torch

from iexact import PRESETS, CompressionConfig
from iexact.config import ADDED_SINCE_VERSION_0, CONFIG_VERSION


def test_paper_presets_reproduce_their_papers_storage():
    """EXACT stores one (min, step) pair per projected row with uniform levels and a
    shared projection; i-Exact blocks of 1024 with optimal levels: what their
    papers describe, as the bytes of one compressed activation show."""
    from iexact import compress

    x = torch.randn(100, 64)
    exact = compress(x, CompressionConfig.exact(), seed=0)
    assert exact.projected_width == 8 and exact.mins.numel() == 100 and exact.levels == (0.0, 1.0, 2.0, 3.0)
    iexact = compress(x, CompressionConfig.iexact(), seed=0)
    assert iexact.mins.numel() == 1 and iexact.levels != (0.0, 1.0, 2.0, 3.0)
    assert CompressionConfig.exact().projection == CompressionConfig.iexact().projection == "shared"


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
        ("projection", "dense"),
        ("rp_norm", 1),
        ("check_finite", "yes"),
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


@pytest.mark.parametrize(
    "config",
    [*PRESETS.values(), CompressionConfig(bits=8, block_size=7, rp_ratio=2.5, scale_dtype=torch.float32, rp_norm=True)],
)
def test_dict_round_trip_is_plain_versioned_json(config):
    record = config.to_dict()
    assert record["version"] == CONFIG_VERSION
    assert json.loads(json.dumps(record)) == record
    assert CompressionConfig.from_dict(record) == config


def test_from_dict_names_unknown_and_missing_fields():
    record = CompressionConfig().to_dict()
    with pytest.raises(ValueError, match=r"unknown field\(s\) bitz; expected bits, block_size"):
        CompressionConfig.from_dict({**record, "bitz": 2})
    del record["check_finite"]
    with pytest.raises(ValueError, match=rf"version {CONFIG_VERSION}\): missing field\(s\) check_finite"):
        CompressionConfig.from_dict(record)
    with pytest.raises(ValueError, match="bits must be one of"):
        CompressionConfig.from_dict({**CompressionConfig().to_dict(), "bits": 3})
    with pytest.raises(ValueError, match="a mapping of its fields, got list"):
        CompressionConfig.from_dict([2, 256])


@pytest.mark.parametrize("version", [CONFIG_VERSION + 1, 99])
def test_a_newer_version_is_refused_by_name(version):
    with pytest.raises(ValueError, match=f"version {version} is newer than this iexact reads.*upgrade iexact"):
        CompressionConfig.from_dict({**CompressionConfig().to_dict(), "version": version})


@pytest.mark.parametrize("version", ["1", -1, 1.0, None, True])
def test_a_malformed_version_is_refused(version):
    with pytest.raises(ValueError, match="version .* is invalid: expected an integer >= 0"):
        CompressionConfig.from_dict({**CompressionConfig().to_dict(), "version": version})


def test_an_unversioned_record_is_upgraded_with_what_its_missing_fields_meant():
    """A record from before versions (version 0) reads its missing later fields as
    they were then (EXACT's shared projection, unprojected norm inputs, inputs
    compressed), never as today's defaults, which differ."""
    early = {"bits": 2, "block_size": 256, "rp_ratio": 8, "levels": "optimal", "scale_dtype": "bfloat16"}
    config = CompressionConfig.from_dict(early)
    assert (config.projection, config.rp_norm, config.reference_inputs, config.check_finite) == (
        "shared",
        False,
        False,
        True,
    )
    assert config != CompressionConfig(rp_ratio=8)  # today's defaults would have said sketch, rp_norm, references
    assert set(ADDED_SINCE_VERSION_0) | set(early) == set(CompressionConfig().to_dict()) - {"version"}
    full = {key: value for key, value in CompressionConfig().to_dict().items() if key != "version"}
    assert CompressionConfig.from_dict(full) == CompressionConfig()  # an unversioned record of every field


def test_a_version_1_record_is_read_uncentered_with_projected_edge_conv_inputs():
    """Centering came with version 2, unprojected edge-conv inputs with 3: a
    config recorded before (a plan, a run's record) reads as it stored then,
    with its bytes and its noise."""
    record = {**CompressionConfig().to_dict(), "version": 1}
    del record["center"], record["rp_edge_convs"], record["dropout_masks"]
    expected = CompressionConfig(center=False, rp_edge_convs=True, dropout_masks="seed")
    assert CompressionConfig.from_dict(record) == expected
    with pytest.raises(ValueError, match="center must be True or False"):
        CompressionConfig(center=1)


def test_a_version_2_record_projects_edge_conv_inputs():
    record = {**CompressionConfig().to_dict(), "version": 2}
    del record["rp_edge_convs"], record["dropout_masks"]
    assert CompressionConfig.from_dict(record) == CompressionConfig(rp_edge_convs=True, dropout_masks="seed")
    with pytest.raises(ValueError, match="rp_edge_convs must be True or False"):
        CompressionConfig(rp_edge_convs="no")


def test_a_version_3_record_redraws_its_dropout_masks():
    record = {**CompressionConfig().to_dict(), "version": 3}
    del record["dropout_masks"]
    assert CompressionConfig.from_dict(record) == CompressionConfig(dropout_masks="seed")
    with pytest.raises(ValueError, match='dropout_masks must be one of "auto", "bits", "seed"'):
        CompressionConfig(dropout_masks="mask")


@pytest.mark.parametrize(
    ("masks", "device", "bits"),
    [
        ("auto", "cpu", True),
        ("auto", "cuda", False),
        ("auto", "meta", False),
        ("bits", "cuda", True),
        ("seed", "cpu", False),
    ],
)
def test_dropout_masks_are_bits_on_cpu_unless_asked_otherwise(masks, device, bits):
    assert CompressionConfig(dropout_masks=masks).keeps_dropout_bits(torch.device(device)) is bits


def test_edge_conv_inputs_are_unprojected_unless_rp_edge_convs():
    assert CompressionConfig().edge_conv_inputs == CompressionConfig(rp_ratio=1)
    assert CompressionConfig(rp_edge_convs=True).edge_conv_inputs == CompressionConfig(rp_edge_convs=True)


def test_str_spells_out_the_config():
    assert str(PRESETS["exact"]) == (
        "INT2, one block per row, shared projection 8, uniform levels, bfloat16 scales, projected edge-conv inputs, "
        "inputs compressed too, uncentered"
    )
    assert str(CompressionConfig(bits=4, rp_ratio=1, rp_norm=False)) == (
        "INT4, blocks of 128, no projection, optimal levels, bfloat16 scales"
    )
    assert str(CompressionConfig()) == (
        "INT2, blocks of 128, sketch projection 4, optimal levels, bfloat16 scales, projected norm inputs"
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


def test_attention_weights_are_kept_unprojected_at_four_bits_or_more():
    assert CompressionConfig().attention_weights == CompressionConfig(bits=4, rp_ratio=1)
    assert CompressionConfig(bits=8).attention_weights == CompressionConfig(bits=8, rp_ratio=1)
    explicit = CompressionConfig(bits=1, rp_ratio=1, levels=(0.0, 1.0))
    assert explicit.attention_weights == CompressionConfig(bits=4, rp_ratio=1, levels="optimal")
    enough = CompressionConfig(bits=4, rp_ratio=1)
    assert enough.attention_weights is enough


def test_gates_take_half_the_bits_in_blocks_twice_as_long_at_two_bits():
    assert CompressionConfig().gates == CompressionConfig(bits=1, block_size=256, rp_ratio=1)
    explicit = CompressionConfig(levels=(0.0, 1.0, 2.0, 3.0), block_size="row")
    assert explicit.gates == CompressionConfig(bits=1, block_size="row", rp_ratio=1, levels="optimal")
    for config in (CompressionConfig(bits=bits) for bits in (1, 4, 8)):  # nothing to halve, or precision asked
        assert config.gates is config.unprojected


def test_derived_configs_derive_theirs_when_asked():
    """At least 4 bits and half the bits would make each other without end if derived eagerly."""
    gates = CompressionConfig().gates
    assert "_attention_weights" not in gates.__dict__
    assert gates.attention_weights == CompressionConfig(bits=4, block_size=256, rp_ratio=1)
    assert gates.attention_weights.gates is gates.attention_weights
    copied = pickle.loads(pickle.dumps(CompressionConfig()))
    assert (
        copied.gates == CompressionConfig().gates and copied.gates.record_json == CompressionConfig().gates.record_json
    )


def test_batch_norm_inputs_are_never_centered_and_projected_only_with_rp_norm():
    config = CompressionConfig()
    assert config.batch_norm_inputs == dataclasses.replace(config, center=False)
    assert CompressionConfig(rp_norm=False).batch_norm_inputs == dataclasses.replace(
        config, rp_norm=False, rp_ratio=1, center=False
    )
    uncentered = CompressionConfig(center=False)
    assert uncentered.batch_norm_inputs is uncentered
