"""Tests for fedmap.runs.config: defaults, TOML round trip, --set overrides, every error."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from fedmap.errors import ConfigError, FedMapError
from fedmap.runs.config import (
    AggregationConfig,
    ClientConfig,
    Config,
    DataConfig,
    FaultsConfig,
    ModelConfig,
    PruningConfig,
    TransportConfig,
    apply_override,
    config_from_dict,
    dump_toml,
    load_config,
)

INF, NAN = math.inf, math.nan


def nested(key: str, value: Any) -> dict[str, Any]:
    """``nested("a.b", 1) == {"a": {"b": 1}}``."""
    *sections, name = key.split(".")
    raw: dict[str, Any] = {name: value}
    for section in reversed(sections):
        raw = {section: raw}
    return raw


def write(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- defaults


def test_config_error_is_a_fedmap_error_and_a_value_error() -> None:
    assert issubclass(ConfigError, FedMapError)
    assert issubclass(ConfigError, ValueError)


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""))
    assert config == Config()
    Config().check()  # the defaults are valid


def test_documented_defaults() -> None:
    config = Config()
    assert (config.seed, config.rounds) == (0, 100)
    assert (config.device, config.engine) == ("auto", "sequential")
    assert config.data == DataConfig()
    assert (config.data.name, config.data.partition) == ("fashion_mnist", "iid")
    assert config.data.path == ""
    assert config.pruning.method == "fedmap"
    assert config.pruning.guard_delta == INF  # no guard by default
    assert config.pruning.rewind is False
    assert config.transport.dtype == "float32"
    assert config.aggregation.rule == "mean"


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().rounds = 3  # type: ignore[misc]


def test_partial_section_keeps_other_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "rounds = 7\n[client]\nlr = 0.01\n"))
    assert config.rounds == 7
    assert config.client == ClientConfig(lr=0.01)
    assert config.data == DataConfig()


def test_int_is_accepted_for_a_float_field(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[data]\nalpha = 1\n"))
    assert config.data.alpha == 1.0
    assert type(config.data.alpha) is float


# --------------------------------------------------------------------------- round trip


def _non_default_config() -> Config:
    return Config(
        seed=2**32 - 1,
        rounds=3,
        device="cpu",
        engine="sequential",
        data=DataConfig(
            name="npz",
            path='/tmp/we"ird\\ dir/dätä.npz',
            partition="dirichlet",
            alpha=0.05,
            classes_per_client=3,
            num_clients=7,
            local_test_fraction=0.0,
        ),
        model=ModelConfig(name="mlp"),
        client=ClientConfig(
            fraction=1.0, epochs=2, batch_size=8, lr=1e-05, momentum=0.9, weight_decay=5e-4
        ),
        pruning=PruningConfig(
            method="none",
            rate=0.35,
            warmup_rounds=0,
            rounds_per_step=2,
            target_sparsity=0.0,
            scope="layer",
            trigger="plateau",
            patience=1,
            guard_delta=0.015,
            rewind=True,
        ),
        transport=TransportConfig(dtype="float16"),
        aggregation=AggregationConfig(rule="trimmed_mean", trim_fraction=0.25),
    )


@pytest.mark.parametrize(
    "config", [Config(), _non_default_config()], ids=["defaults", "non-default"]
)
def test_dump_toml_round_trip(tmp_path: Path, config: Config) -> None:
    text = dump_toml(config)
    loaded = load_config(write(tmp_path, text))
    assert loaded == config
    assert dump_toml(loaded) == text  # stable: dumping again changes nothing


def test_round_trip_keeps_infinite_guard_delta(tmp_path: Path) -> None:
    config = Config(pruning=PruningConfig(guard_delta=INF))
    text = dump_toml(config)
    assert "guard_delta = inf" in text
    loaded = load_config(write(tmp_path, text))
    assert loaded.pruning.guard_delta == INF
    assert loaded == config


def test_dump_toml_writes_every_section(tmp_path: Path) -> None:
    text = dump_toml(Config())
    for section in ("data", "model", "client", "pruning", "transport", "aggregation"):
        assert f"[{section}]" in text


# --------------------------------------------------------------------------- --set


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("rounds=5", {"rounds": 5}),
        ("rounds = 5", {"rounds": 5}),
        ("client.lr=0.125", {"client": {"lr": 0.125}}),
        ("client.lr=1e-3", {"client": {"lr": 0.001}}),
        ("pruning.rewind=true", {"pruning": {"rewind": True}}),
        ("pruning.guard_delta=inf", {"pruning": {"guard_delta": INF}}),
        ("data.name=digits", {"data": {"name": "digits"}}),  # not TOML: taken as a string
        ('data.name="digits"', {"data": {"name": "digits"}}),
        ("device=cuda:1", {"device": "cuda:1"}),
        ("data.path=/tmp/x=y.npz", {"data": {"path": "/tmp/x=y.npz"}}),  # split at the first =
    ],
)
def test_apply_override_types(override: str, expected: dict[str, Any]) -> None:
    raw: dict[str, Any] = {}
    apply_override(raw, override)
    assert raw == expected
    leaf = raw
    while isinstance(leaf, dict):
        ((_, leaf),) = leaf.items()
    want = expected
    while isinstance(want, dict):
        ((_, want),) = want.items()
    assert type(leaf) is type(want)


def test_apply_override_merges_into_an_existing_section() -> None:
    raw: dict[str, Any] = {"data": {"name": "digits", "num_clients": 10}}
    apply_override(raw, "data.num_clients=7")
    assert raw == {"data": {"name": "digits", "num_clients": 7}}


def test_overrides_win_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'rounds = 3\n[data]\nname = "digits"\nnum_clients = 10\n')
    config = load_config(
        path,
        [
            "rounds=4",
            "seed=9",
            "data.num_clients=6",
            "client.lr=0.2",
            "pruning.rewind=true",
            "pruning.method=none",
            "data.partition=dirichlet",
            "data.alpha=2",
        ],
    )
    assert config.rounds == 4 and config.seed == 9
    assert config.data == DataConfig(name="digits", num_clients=6, partition="dirichlet", alpha=2.0)
    assert config.client.lr == 0.2
    assert config.pruning.rewind is True
    assert config.pruning.method == "none"


def test_later_override_wins(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""), ["rounds=2", "rounds=8"])
    assert config.rounds == 8


@pytest.mark.parametrize("override", ["rounds", "=5", "  =5", ""])
def test_bad_set_syntax(override: str) -> None:
    with pytest.raises(ConfigError, match="--set") as info:
        apply_override({}, override)
    assert repr(override) in str(info.value)


def test_set_into_a_scalar_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--set rounds\.x: rounds is not a section"):
        load_config(write(tmp_path, "rounds = 3\n"), ["rounds.x=1"])


def test_set_unknown_key_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"client\.learning_rate"):
        load_config(write(tmp_path, ""), ["client.learning_rate=0.1"])


# --------------------------------------------------------------------------- unknown keys


def test_unknown_top_level_key_with_hint() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"round": 3})
    message = str(info.value)
    assert "unknown config key round" in message
    assert "did you mean rounds?" in message


def test_unknown_top_level_key_without_close_match() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"zzzzzz": 3})
    assert "zzzzzz" in str(info.value)
    assert "did you mean" not in str(info.value)


@pytest.mark.parametrize(
    ("raw", "key", "hint"),
    [
        ({"data": {"num_client": 5}}, "data.num_client", "data.num_clients"),
        ({"pruning": {"warmup_round": 1}}, "pruning.warmup_round", "pruning.warmup_rounds"),
        ({"client": {"batchsize": 8}}, "client.batchsize", "client.batch_size"),
        ({"aggregation": {"rules": "mean"}}, "aggregation.rules", "aggregation.rule"),
    ],
)
def test_unknown_nested_key_with_hint(raw: dict[str, Any], key: str, hint: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw)
    assert f"unknown config key {key} (did you mean {hint}?)" in str(info.value)


def test_unknown_key_in_file_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data\.num_client .*did you mean data\.num_clients"):
        load_config(write(tmp_path, "[data]\nnum_client = 5\n"))


# --------------------------------------------------------------------------- wrong types


@pytest.mark.parametrize(
    ("key", "value", "field"),
    [
        ("rounds", "3", "rounds"),
        ("rounds", True, "rounds"),  # bool is not an int here
        ("rounds", 2.5, "rounds"),
        ("seed", False, "seed"),
        ("data.num_clients", "10", "data.num_clients"),
        ("data.num_clients", True, "data.num_clients"),
        ("data.alpha", "0.5", "data.alpha"),
        ("data.alpha", True, "data.alpha"),
        ("client.lr", [0.1], "client.lr"),
        ("pruning.rewind", 1, "pruning.rewind"),
        ("pruning.rewind", "yes", "pruning.rewind"),
        ("data.name", 3, "data.name"),
        ("device", 0, "device"),
        ("data", 3, "data"),  # a scalar where a table belongs
        ("model", "cnn", "model"),
    ],
)
def test_wrong_type_names_the_field(key: str, value: Any, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(nested(key, value))
    assert str(info.value).startswith(f"{field}: expected")


def test_wrong_type_in_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^rounds: expected int, got 'three'$"):
        load_config(write(tmp_path, 'rounds = "three"\n'))


def test_wrong_type_via_set(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^data\.num_clients: expected int, got True$"):
        load_config(write(tmp_path, ""), ["data.num_clients=true"])


# --------------------------------------------------------------------------- ranges


BAD_VALUES: list[tuple[str, Any]] = [
    ("rounds", 0),
    ("rounds", -3),
    ("seed", -1),
    ("seed", 2**32),
    ("engine", "parallel"),
    ("cohort_chunk", -1),
    ("data.name", "mnist"),
    ("data.partition", "shards"),
    ("data.alpha", 0.0),
    ("data.alpha", -1.0),
    ("data.alpha", INF),
    ("data.alpha", NAN),
    ("data.classes_per_client", 0),
    ("data.num_clients", 0),
    ("data.local_test_fraction", 1.0),
    ("data.local_test_fraction", -0.1),
    ("data.local_test_fraction", NAN),
    ("model.name", "vgg16"),
    ("client.fraction", 0.0),
    ("client.fraction", 1.5),
    ("client.fraction", NAN),
    ("client.epochs", 0),
    ("client.batch_size", 0),
    ("client.lr", 0.0),
    ("client.lr", -0.1),
    ("client.lr", INF),
    ("client.lr", NAN),
    ("client.momentum", 1.0),
    ("client.momentum", -0.5),
    ("client.weight_decay", -1e-4),
    ("client.weight_decay", INF),
    ("client.weight_decay", NAN),
    ("pruning.method", "magic"),
    ("pruning.rate", 0.0),
    ("pruning.rate", 1.0),
    ("pruning.rate", NAN),
    ("pruning.warmup_rounds", -1),
    ("pruning.rounds_per_step", 0),
    ("pruning.target_sparsity", 1.0),
    ("pruning.target_sparsity", -0.1),
    ("pruning.target_sparsity", NAN),
    ("pruning.scope", "neuron"),
    ("pruning.ranking", "gradient"),
    ("pruning.trigger", "never"),
    ("pruning.patience", 0),
    ("pruning.guard_delta", -0.01),
    ("pruning.guard_delta", NAN),
    ("transport.dtype", "int3"),
    ("aggregation.rule", "max"),
    ("aggregation.trim_fraction", 0.5),
    ("aggregation.trim_fraction", -0.1),
    ("aggregation.norm_threshold", 1.0),
    ("aggregation.norm_threshold", NAN),
    ("checkpoint_every", 0),
    ("faults.dropout", 1.0),
    ("faults.dropout", -0.1),
    ("faults.dropout", NAN),
    ("faults.straggler_fraction", 1.5),
    ("faults.straggler_fraction", NAN),
    ("faults.deadline_s", 0.0),
    ("faults.deadline_s", NAN),
    ("faults.min_clients", 0),
    ("faults.min_clients", 11),  # the default cohort is 10 of 100 clients
    ("faults.max_attempts", 0),
    ("faults.attack", "backdoor"),
    ("faults.attacker_fraction", 1.5),
    ("faults.attack_scale", 0.0),
    ("faults.attack_scale", INF),
]


@pytest.mark.parametrize(("key", "value"), BAD_VALUES, ids=[f"{k}={v!r}" for k, v in BAD_VALUES])
def test_range_check_names_the_field(key: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(nested(key, value))
    message = str(info.value)
    assert message.startswith(f"{key}: expected "), message
    assert repr(value) in message or (isinstance(value, float) and math.isnan(value))


def test_every_validated_field_has_a_bad_value() -> None:
    """Each scalar field with a range or a choice appears in BAD_VALUES at least once."""
    unchecked = {"device", "data.path", "pruning.rewind", "compile"}  # device: its own tests below
    leaves = {f.name for f in dataclasses.fields(Config) if not dataclasses.is_dataclass(f.type)}
    for section in dataclasses.fields(Config):
        value = getattr(Config(), section.name)
        if dataclasses.is_dataclass(value):
            leaves.discard(section.name)
            leaves |= {f"{section.name}.{f.name}" for f in dataclasses.fields(value)}
    assert leaves - unchecked - {key for key, _ in BAD_VALUES} == set()


CROSS_SECTION = {"faults.min_clients"}  # its upper bound is the cohort: Config.check's


@pytest.mark.parametrize(("key", "value"), BAD_VALUES, ids=[f"{k}={v!r}" for k, v in BAD_VALUES])
def test_each_section_checks_its_own_fields(key: str, value: Any) -> None:
    """The section alone (or Config for a top-level key) gives the same line as a whole load."""
    if key in CROSS_SECTION:
        pytest.skip("checked across sections")
    section, _, name = key.rpartition(".")
    owner = type(getattr(Config(), section))(**{name: value}) if section else Config(**{key: value})
    with pytest.raises(ConfigError) as alone:
        owner.check()
    with pytest.raises(ConfigError) as loaded:
        config_from_dict(nested(key, value))
    assert str(alone.value) == str(loaded.value)


def test_building_a_section_checks_nothing_and_loads_nothing() -> None:
    """Defaults and bad values alike build without importing torch (checking is a step)."""
    heavy = ("torch", "numpy", "fedmap.core", "fedmap.data", "fedmap.methods", "fedmap.models")
    code = (
        "import sys; from fedmap.runs.config import Config, ClientConfig, dump_toml; "
        "dump_toml(Config()); ClientConfig(lr=-1.0); "
        f"print(sorted(m for m in sys.modules if m.startswith({heavy!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_min_clients_is_bounded_by_the_cohort() -> None:
    FaultsConfig(min_clients=50).check()  # the section alone cannot know the cohort
    small = {"data": {"num_clients": 6}, "client": {"fraction": 0.34}}  # cohort: 2
    assert config_from_dict(small | {"faults": {"min_clients": 2}}).faults.min_clients == 2
    with pytest.raises(ConfigError) as info:
        config_from_dict(small | {"faults": {"min_clients": 3}})
    assert str(info.value) == (
        "faults.min_clients: expected an integer in [1, 2] (the clients sampled per round), got 3"
    )


def test_a_bad_section_field_is_reported_before_a_cross_section_one() -> None:
    with pytest.raises(ConfigError, match=r"^client\.fraction: expected a number in \(0, 1\]"):
        config_from_dict({"client": {"fraction": 2.0}, "faults": {"min_clients": 50}})


def _methods(sends_masks: bool) -> list[str]:
    from fedmap.methods.registry import all_methods

    return [cls.name for cls in all_methods() if cls.sends_masks is sends_masks]


def test_the_registry_has_methods_of_both_kinds() -> None:
    assert _methods(True) and _methods(False)  # else the two tests below test nothing


@pytest.mark.parametrize("rule", ["median", "trimmed_mean"])
def test_a_method_sending_its_own_masks_needs_the_mean_rule(rule: str) -> None:
    for method in _methods(True):
        raw = {"pruning": {"method": method}, "aggregation": {"rule": rule}}
        with pytest.raises(ConfigError) as info:
            config_from_dict(raw)
        assert str(info.value) == (
            f"aggregation.rule: expected 'mean' with pruning.method {method!r} "
            f"(its clients send masks of their own), got {rule!r}"
        )
        assert config_from_dict(raw | {"aggregation": {"rule": "mean"}}).pruning.method == method


@pytest.mark.parametrize("rule", ["median", "trimmed_mean"])
def test_a_method_sharing_the_global_mask_takes_any_rule(rule: str) -> None:
    for method in _methods(False):
        raw = {"pruning": {"method": method}, "aggregation": {"rule": rule}}
        assert config_from_dict(raw).aggregation.rule == rule


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("seed", 2**32 - 1),
        ("rounds", 1),
        ("data.local_test_fraction", 0.0),
        ("client.fraction", 1.0),
        ("client.momentum", 0.0),
        ("client.weight_decay", 0.0),
        ("pruning.rate", 0.999),
        ("pruning.warmup_rounds", 0),
        ("pruning.target_sparsity", 0.0),
        ("pruning.guard_delta", 0.0),
        ("pruning.guard_delta", INF),
        ("aggregation.trim_fraction", 0.0),
        ("aggregation.trim_fraction", 0.49),
    ],
)
def test_boundary_values_are_accepted(key: str, value: Any) -> None:
    config = config_from_dict(nested(key, value))
    section, _, name = key.rpartition(".")
    owner = getattr(config, section) if section else config
    assert getattr(owner, name) == value


def test_range_error_from_a_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[pruning]\nrate = 1.5\n")
    expected = r"^pruning\.rate: expected a number in \(0, 1\), got 1\.5$"
    with pytest.raises(ConfigError, match=expected):
        load_config(path)


# --------------------------------------------------------------------------- files


def test_missing_config_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError, match="config file not found") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_directory_is_not_a_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path)


def test_invalid_toml_names_the_path(tmp_path: Path) -> None:
    path = write(tmp_path, "rounds = = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_binary_file_is_invalid_toml(tmp_path: Path) -> None:
    path = tmp_path / "binary.toml"
    path.write_bytes(b"\xff\xfe\x00rounds\x80\x81")
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        load_config(path)
    assert str(path) in str(info.value)


# --------------------------------------------------------------------------- device


@pytest.mark.parametrize("device", ["auto", "cpu", "cpu:0"])
def test_cpu_devices_are_accepted(device: str) -> None:
    assert config_from_dict({"device": device}).device == device


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_without_cuda_is_rejected(device: str) -> None:
    with pytest.raises(ConfigError, match=r"^device: .*CUDA is not available"):
        config_from_dict({"device": device})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_is_accepted_when_available() -> None:
    assert config_from_dict({"device": "cuda"}).device == "cuda"


@pytest.mark.parametrize("device", ["tpu", "", "cuda:abc", "meta", "mps", "gpu"])
def test_unknown_device_is_rejected(device: str) -> None:
    expected = r"^device: expected 'auto', 'cpu' or 'cuda\[:N\]'"
    with pytest.raises(ConfigError, match=expected) as info:
        config_from_dict({"device": device})
    assert repr(device) in str(info.value)
