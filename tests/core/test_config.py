"""AcceleratorConfig: validation, presets, stable hash."""

import json

import pytest

from trilobit.config import PRESETS, AcceleratorConfig, BitSerialParams, TlmmParams, preset
from trilobit.errors import ConfigError


def test_presets_are_valid_and_distinct():
    hashes = {name: cfg.hash() for name, cfg in PRESETS.items()}
    assert set(hashes) == {"tiny", "small", "large"}
    assert len(set(hashes.values())) == 3
    assert preset("small") is PRESETS["small"]


def test_hash_is_sha256_of_canonical_json_and_ignores_name():
    cfg = preset("small")
    import hashlib

    assert cfg.hash() == hashlib.sha256(cfg.canonical_json().encode()).hexdigest()
    assert cfg.replace(name="renamed").hash() == cfg.hash()
    assert cfg.replace(mem_width=32).hash() != cfg.hash()
    assert cfg.replace(tlmm=TlmmParams(group_size=2, rows=8, units=2)).hash() != cfg.hash()
    assert "name" not in json.loads(cfg.canonical_json())
    assert cfg.hash32() == int(cfg.hash()[:8], 16)


def test_hash_is_stable_across_processes():
    # A literal: the hash identifies hardware in program files, so it must never drift.
    cfg = AcceleratorConfig()
    assert cfg.canonical_json().startswith('{"acc_bytes":16384,"bitserial":{"bits_per_cycle":2')


def test_round_trip_through_dict():
    for cfg in PRESETS.values():
        again = AcceleratorConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
        assert again == cfg and again.hash() == cfg.hash()
    no_tlmm = preset("small").replace(tlmm=None)
    assert AcceleratorConfig.from_dict(no_tlmm.to_dict()) == no_tlmm


@pytest.mark.parametrize(
    "changes, parameter",
    [
        ({"mem_width": 48}, "mem_width"),
        ({"bus": "apb"}, "bus"),
        ({"inp_bytes": 1000}, "inp_bytes"),
        ({"wgt_bytes": 4}, "wgt_bytes"),
        ({"acc_bytes": 1 << 20}, "acc_bytes"),
        ({"queue_depth": 1}, "queue_depth"),
        ({"token_depth": 0}, "token_depth"),
        ({"compact": 1}, "compact"),
        ({"addr_bits": 11}, "addr_bits"),
        ({"addr_bits": 33}, "addr_bits"),
        ({"addr_bits": True}, "addr_bits"),
        ({"watchdog_cycles": 0}, "watchdog_cycles"),
        ({"tlmm": None, "bitserial": None}, "engine"),
    ],
)
def test_bad_parameters_raise_config_error_naming_them(changes, parameter):
    with pytest.raises(ConfigError, match=parameter):
        AcceleratorConfig(**changes)


@pytest.mark.parametrize(
    "make, parameter",
    [
        (lambda: TlmmParams(group_size=5), "group_size"),
        (lambda: TlmmParams(rows=0), "rows"),
        (lambda: TlmmParams(units=17), "units"),
        (lambda: BitSerialParams(bits_per_cycle=3), "bits_per_cycle"),
        (lambda: BitSerialParams(group_size=96), "group_size"),
        (lambda: BitSerialParams(lanes=65), "lanes"),
    ],
)
def test_bad_engine_parameters_raise(make, parameter):
    with pytest.raises(ConfigError, match=parameter):
        make()


def test_unknown_preset_and_unknown_keys():
    with pytest.raises(ConfigError, match="preset"):
        preset("huge")
    with pytest.raises(ConfigError, match="unknown"):
        AcceleratorConfig.from_dict({"frequency": 100})


def test_line_bytes_and_buffer_sizes():
    cfg = preset("tiny")
    assert cfg.line_bytes == 4
    assert cfg.buffer_bytes("acc") == 4096
    with pytest.raises(ConfigError):
        cfg.buffer_bytes("lut")


def test_requant_modes_and_perf_counters_are_validated():
    cfg = preset("small")
    assert cfg.requant_modes == ("ort", "dyadic") and cfg.perf_counters is True
    slim = cfg.replace(requant_modes=("dyadic",), perf_counters=False)
    assert slim.hash() != cfg.hash()
    assert AcceleratorConfig.from_dict(json.loads(json.dumps(slim.to_dict()))) == slim
    for bad in [(), ("ort", "ort"), ("float",), "ort"]:
        with pytest.raises(ConfigError, match="requant_modes"):
            cfg.replace(requant_modes=bad)
    with pytest.raises(ConfigError, match="perf_counters"):
        cfg.replace(perf_counters=1)


def test_addr_bits_enters_the_hash_only_when_narrowed():
    cfg = preset("tiny")
    assert cfg.addr_bits == 32 and "addr_bits" not in cfg.canonical_json()
    narrow = cfg.replace(addr_bits=17)
    assert '"addr_bits":17' in narrow.canonical_json() and narrow.hash() != cfg.hash()
    assert AcceleratorConfig.from_dict(json.loads(json.dumps(narrow.to_dict()))) == narrow
    # a dict written before the field existed reads as 32-bit addresses, same hash
    old = cfg.to_dict()
    del old["addr_bits"]
    assert AcceleratorConfig.from_dict(old).hash() == cfg.hash()
