"""Typed, frozen experiment configuration, loaded from TOML with ``--set`` overrides.

Defaults do nothing surprising, unknown keys are rejected with a suggestion, and
every bad value raises :class:`ConfigError` naming the field, what was expected and
what arrived. The resolved config is written back to each run directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from fedmap.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

METHODS = ("fedmap", "none", "local", "oneshot", "gradual", "random", "prunefl", "feddst")
MASK_MERGING_METHODS = ("local", "feddst")  # replies carry their own masks: mean only
ENGINES = ("sequential", "vectorized")


@dataclass(frozen=True)
class DataConfig:
    """``[data]``: which dataset and how it is split over clients."""

    name: str = "fashion_mnist"
    path: str = ""  # empty: the dataset's default location
    partition: str = "iid"
    alpha: float = 0.5
    classes_per_client: int = 2
    num_clients: int = 100
    local_test_fraction: float = 0.1


@dataclass(frozen=True)
class ModelConfig:
    """``[model]``."""

    name: str = "cnn"


@dataclass(frozen=True)
class ClientConfig:
    """``[client]``: sampling and local SGD."""

    fraction: float = 0.1
    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.0
    weight_decay: float = 0.0


@dataclass(frozen=True)
class PruningConfig:
    """``[pruning]``: the method and FedMap's schedule (DESIGN.md section 1)."""

    method: str = "fedmap"
    rate: float = 0.2
    warmup_rounds: int = 10
    rounds_per_step: int = 5
    target_sparsity: float = 0.9
    scope: str = "global"
    trigger: str = "fixed"
    patience: int = 3
    guard_delta: float = math.inf  # accuracy fraction (0.01 = one point); inf = no guard
    rewind: bool = False


@dataclass(frozen=True)
class TransportConfig:
    """``[transport]``: value dtype on the wire."""

    dtype: str = "float32"


@dataclass(frozen=True)
class AggregationConfig:
    """``[aggregation]``: how packed client vectors are combined."""

    rule: str = "mean"
    trim_fraction: float = 0.1
    norm_threshold: float = 10.0  # reject updates > this x the cohort's median norm; inf: off


@dataclass(frozen=True)
class FaultsConfig:
    """``[faults]``: simulated dropouts, stragglers, attackers, and how rounds cope."""

    dropout: float = 0.0
    straggler_fraction: float = 0.0
    deadline_s: float = math.inf
    min_clients: int = 1
    max_attempts: int = 10
    attack: str = "none"
    attacker_fraction: float = 0.0
    attack_scale: float = 10.0


@dataclass(frozen=True)
class Config:
    """A whole experiment."""

    seed: int = 0
    rounds: int = 100
    device: str = "auto"
    engine: str = "sequential"
    cohort_chunk: int = (
        0  # vectorized: clients per batched program; 0 = auto (all on CUDA, 1 on CPU)
    )
    compile: bool = False  # vectorized: torch.compile the per-step program
    checkpoint_every: int = 1  # rounds between checkpoints (the last round always gets one)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    client: ClientConfig = field(default_factory=ClientConfig)
    pruning: PruningConfig = field(default_factory=PruningConfig)
    transport: TransportConfig = field(default_factory=TransportConfig)
    aggregation: AggregationConfig = field(default_factory=AggregationConfig)
    faults: FaultsConfig = field(default_factory=FaultsConfig)


def read_toml(path: str | Path, what: str = "config") -> dict[str, Any]:
    """The table in ``path``; a missing or malformed file is a :class:`ConfigError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} file not found: {path}")
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not valid TOML ({error})") from error


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a TOML file, apply ``key=value`` overrides, build and validate the config."""
    raw = read_toml(path)
    for override in overrides or []:
        apply_override(raw, override)
    return config_from_dict(raw)


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Set ``section.key=value`` in ``raw``; the value is read as TOML, else as a string."""
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value, got {override!r}")
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()
    *sections, name = key.strip().split(".")
    target = raw
    for section in sections:
        target = target.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(f"--set {key}: {section} is not a section")
    target[name] = value


def config_from_text(text: str, what: str = "config") -> Config:
    """A validated :class:`Config` from TOML text (what a Flower node receives in its hello)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{what}: invalid TOML: {error}") from error
    return config_from_dict(raw)


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Build a :class:`Config` from nested dicts; reject unknown keys and bad types."""
    config = _build(Config, raw, prefix="")
    validate(config)
    return config


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a table, got {raw!r}")
    known = {f.name: f for f in fields(cls)}
    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
            raise ConfigError(f"unknown config key {prefix}{key}{hint}")
    values = {}
    for name, spec in known.items():
        if name not in raw:
            continue
        default = spec.default_factory() if spec.default is dataclasses.MISSING else spec.default  # type: ignore[misc,operator]
        if dataclasses.is_dataclass(default):
            values[name] = _build(type(default), raw[name], f"{prefix}{name}.")
        else:
            values[name] = _coerce(f"{prefix}{name}", raw[name], type(default))
    return cls(**values)


def _coerce(name: str, value: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{name}: expected {kind.__name__}, got {value!r}")


def validate(config: Config) -> None:
    """Check every value's range and choice; raise :class:`ConfigError` naming the field."""
    from fedmap.core.aggregate import AGGREGATION_RULES
    from fedmap.core.codec import DTYPE_NAMES
    from fedmap.core.prune import SCOPES
    from fedmap.core.schedule import TRIGGERS
    from fedmap.data.datasets import DATASET_NAMES
    from fedmap.data.partition import PARTITION_NAMES
    from fedmap.engines.faults import ATTACKS
    from fedmap.engines.simulate import cohort_size
    from fedmap.models import MODEL_NAMES

    d, c, p, f = config.data, config.client, config.pruning, config.faults
    sane = 0 < c.fraction <= 1 and d.num_clients >= 1  # else those fields fail first
    cohort = cohort_size(d.num_clients, c.fraction) if sane else 1
    checks: list[tuple[str, Any, bool, str]] = [
        ("rounds", config.rounds, config.rounds >= 1, "an integer >= 1"),
        ("seed", config.seed, 0 <= config.seed < 2**32, "an integer in [0, 2**32)"),
        ("engine", config.engine, config.engine in ENGINES, f"one of {ENGINES}"),
        ("cohort_chunk", config.cohort_chunk, config.cohort_chunk >= 0, "an integer >= 0"),
        (
            "checkpoint_every",
            config.checkpoint_every,
            config.checkpoint_every >= 1,
            "an integer >= 1",
        ),
        ("data.name", d.name, d.name in DATASET_NAMES, f"one of {DATASET_NAMES}"),
        (
            "data.partition",
            d.partition,
            d.partition in PARTITION_NAMES,
            f"one of {PARTITION_NAMES}",
        ),
        ("data.alpha", d.alpha, d.alpha > 0 and math.isfinite(d.alpha), "a positive number"),
        (
            "data.classes_per_client",
            d.classes_per_client,
            d.classes_per_client >= 1,
            "an integer >= 1",
        ),
        ("data.num_clients", d.num_clients, d.num_clients >= 1, "an integer >= 1"),
        (
            "data.local_test_fraction",
            d.local_test_fraction,
            0 <= d.local_test_fraction < 1,
            "a number in [0, 1)",
        ),
        (
            "model.name",
            config.model.name,
            config.model.name in MODEL_NAMES,
            f"one of {MODEL_NAMES}",
        ),
        ("client.fraction", c.fraction, 0 < c.fraction <= 1, "a number in (0, 1]"),
        ("client.epochs", c.epochs, c.epochs >= 1, "an integer >= 1"),
        ("client.batch_size", c.batch_size, c.batch_size >= 1, "an integer >= 1"),
        ("client.lr", c.lr, c.lr > 0 and math.isfinite(c.lr), "a positive number"),
        ("client.momentum", c.momentum, 0 <= c.momentum < 1, "a number in [0, 1)"),
        ("client.weight_decay", c.weight_decay, 0 <= c.weight_decay < math.inf, "a number >= 0"),
        ("pruning.method", p.method, p.method in METHODS, f"one of {METHODS}"),
        ("pruning.rate", p.rate, 0 < p.rate < 1, "a number in (0, 1)"),
        ("pruning.warmup_rounds", p.warmup_rounds, p.warmup_rounds >= 0, "an integer >= 0"),
        ("pruning.rounds_per_step", p.rounds_per_step, p.rounds_per_step >= 1, "an integer >= 1"),
        (
            "pruning.target_sparsity",
            p.target_sparsity,
            0 <= p.target_sparsity < 1,
            "a number in [0, 1)",
        ),
        ("pruning.scope", p.scope, p.scope in SCOPES, f"one of {SCOPES}"),
        (
            "aggregation.rule",
            config.aggregation.rule,
            p.method not in MASK_MERGING_METHODS or config.aggregation.rule == "mean",
            f"'mean' with pruning.method {p.method!r} (its clients send masks of their own)",
        ),
        ("pruning.trigger", p.trigger, p.trigger in TRIGGERS, f"one of {TRIGGERS}"),
        ("pruning.patience", p.patience, p.patience >= 1, "an integer >= 1"),
        ("pruning.guard_delta", p.guard_delta, p.guard_delta >= 0, "a number >= 0 (inf: no guard)"),
        (
            "transport.dtype",
            config.transport.dtype,
            config.transport.dtype in DTYPE_NAMES,
            f"one of {DTYPE_NAMES}",
        ),
        (
            "aggregation.rule",
            config.aggregation.rule,
            config.aggregation.rule in AGGREGATION_RULES,
            f"one of {AGGREGATION_RULES}",
        ),
        (
            "aggregation.trim_fraction",
            config.aggregation.trim_fraction,
            0 <= config.aggregation.trim_fraction < 0.5,
            "a number in [0, 0.5)",
        ),
        (
            "aggregation.norm_threshold",
            config.aggregation.norm_threshold,
            config.aggregation.norm_threshold > 1,
            "a number > 1 (inf: no norm screen)",
        ),
        ("faults.dropout", f.dropout, 0 <= f.dropout < 1, "a number in [0, 1)"),
        (
            "faults.straggler_fraction",
            f.straggler_fraction,
            0 <= f.straggler_fraction <= 1,
            "a number in [0, 1]",
        ),
        ("faults.deadline_s", f.deadline_s, f.deadline_s > 0, "a number > 0 (inf: no deadline)"),
        (
            "faults.min_clients",
            f.min_clients,
            1 <= f.min_clients <= cohort,
            f"an integer in [1, {cohort}] (the clients sampled per round)",
        ),
        ("faults.max_attempts", f.max_attempts, f.max_attempts >= 1, "an integer >= 1"),
        ("faults.attack", f.attack, f.attack in ATTACKS, f"one of {ATTACKS}"),
        (
            "faults.attacker_fraction",
            f.attacker_fraction,
            0 <= f.attacker_fraction <= 1,
            "a number in [0, 1]",
        ),
        (
            "faults.attack_scale",
            f.attack_scale,
            f.attack_scale > 0 and math.isfinite(f.attack_scale),
            "a positive number",
        ),
    ]
    for name, value, ok, expected in checks:
        if not ok:
            raise ConfigError(f"{name}: expected {expected}, got {value!r}")
    _validate_device(config.device)


def _validate_device(device: str) -> None:
    import torch

    if device == "auto":
        return
    try:
        parsed = torch.device(device)
    except RuntimeError as error:
        raise ConfigError(
            f"device: expected 'auto', 'cpu' or 'cuda[:N]', got {device!r}"
        ) from error
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device: {device!r} requested but CUDA is not available (use 'auto' or 'cpu')"
        )
    if parsed.type not in ("cpu", "cuda"):
        raise ConfigError(f"device: expected 'auto', 'cpu' or 'cuda[:N]', got {device!r}")


def config_to_dict(config: Config) -> dict[str, Any]:
    """Nested plain dicts, in field order."""
    return dataclasses.asdict(config)


def dump_toml(config: Config) -> str:
    """The config as TOML that :func:`load_config` reads back to an equal config."""
    top, sections = [], []
    for key, value in config_to_dict(config).items():
        if isinstance(value, dict):
            body = "\n".join(f"{k} = {_toml_value(v)}" for k, v in value.items())
            sections.append(f"[{key}]\n{body}\n")
        else:
            top.append(f"{key} = {_toml_value(value)}")
    return "\n".join(top) + "\n\n" + "\n".join(sections)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    return json.dumps(value)
