"""Typed, frozen experiment configuration, loaded from TOML with ``--set`` overrides.

Defaults do nothing surprising, unknown keys are rejected with a suggestion, and
every bad value raises :class:`ConfigError` naming the field, what was expected and
what arrived. Each section checks its own fields in its ``check`` method, beside
them; :meth:`Config.check` adds what spans sections. Checking is a separate step,
not ``__post_init__``, because the choices come from their owners (datasets,
models, methods), which import torch: building a config, even the defaults,
stays cheap. The resolved config is written back to each run directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from fedmap.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ENGINES = ("sequential", "vectorized")


def _expect(section: Any, name: str, ok: bool, expected: str) -> None:
    """Raise ``"{key}: expected {expected}, got {value!r}"`` unless ``ok`` (key: section.name)."""
    if not ok:
        key = f"{section.SECTION}.{name}" if section.SECTION else name
        raise ConfigError(f"{key}: expected {expected}, got {getattr(section, name)!r}")


def _expect_one_of(section: Any, name: str, choices: tuple[str, ...]) -> None:
    """Raise unless the field ``name`` of ``section`` is one of ``choices``."""
    _expect(section, name, getattr(section, name) in choices, f"one of {choices}")


@dataclass(frozen=True)
class DataConfig:
    """``[data]``: which dataset and how it is split over clients."""

    SECTION: ClassVar[str] = "data"
    name: str = "fashion_mnist"
    path: str = ""  # empty: the dataset's default location
    partition: str = "iid"
    alpha: float = 0.5
    classes_per_client: int = 2
    num_clients: int = 100
    local_test_fraction: float = 0.1

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the first field out of range (``path``: any)."""
        from fedmap.data.datasets import DATASET_NAMES
        from fedmap.data.partition import PARTITION_NAMES

        _expect_one_of(self, "name", DATASET_NAMES)
        _expect_one_of(self, "partition", PARTITION_NAMES)
        _expect(self, "alpha", self.alpha > 0 and math.isfinite(self.alpha), "a positive number")
        _expect(self, "classes_per_client", self.classes_per_client >= 1, "an integer >= 1")
        _expect(self, "num_clients", self.num_clients >= 1, "an integer >= 1")
        fraction = self.local_test_fraction
        _expect(self, "local_test_fraction", 0 <= fraction < 1, "a number in [0, 1)")


@dataclass(frozen=True)
class ModelConfig:
    """``[model]``."""

    SECTION: ClassVar[str] = "model"
    name: str = "cnn"

    def check(self) -> None:
        """Raise :class:`ConfigError` unless ``name`` is a model of the zoo."""
        from fedmap.models import MODEL_NAMES

        _expect_one_of(self, "name", MODEL_NAMES)


@dataclass(frozen=True)
class ClientConfig:
    """``[client]``: sampling and local SGD."""

    SECTION: ClassVar[str] = "client"
    fraction: float = 0.1
    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.0
    weight_decay: float = 0.0

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the first field out of range."""
        _expect(self, "fraction", 0 < self.fraction <= 1, "a number in (0, 1]")
        _expect(self, "epochs", self.epochs >= 1, "an integer >= 1")
        _expect(self, "batch_size", self.batch_size >= 1, "an integer >= 1")
        _expect(self, "lr", self.lr > 0 and math.isfinite(self.lr), "a positive number")
        _expect(self, "momentum", 0 <= self.momentum < 1, "a number in [0, 1)")
        _expect(self, "weight_decay", 0 <= self.weight_decay < math.inf, "a number >= 0")


@dataclass(frozen=True)
class PruningConfig:
    """``[pruning]``: the method and FedMap's schedule (docs/design.md §1)."""

    SECTION: ClassVar[str] = "pruning"
    method: str = "fedmap"
    rate: float = 0.2
    warmup_rounds: int = 10
    rounds_per_step: int = 5
    target_sparsity: float = 0.9
    scope: str = "global"
    ranking: str = "magnitude"
    trigger: str = "fixed"
    patience: int = 3
    guard_delta: float = math.inf  # accuracy fraction (0.01 = one point); inf = no guard
    rewind: bool = False

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the first field out of range (``rewind``: any)."""
        from fedmap.core.prune import RANKINGS, SCOPES
        from fedmap.core.schedule import TRIGGERS
        from fedmap.methods.registry import method_names

        _expect_one_of(self, "method", method_names())
        _expect(self, "rate", 0 < self.rate < 1, "a number in (0, 1)")
        _expect(self, "warmup_rounds", self.warmup_rounds >= 0, "an integer >= 0")
        _expect(self, "rounds_per_step", self.rounds_per_step >= 1, "an integer >= 1")
        _expect(self, "target_sparsity", 0 <= self.target_sparsity < 1, "a number in [0, 1)")
        _expect_one_of(self, "scope", SCOPES)
        _expect_one_of(self, "ranking", RANKINGS)
        _expect_one_of(self, "trigger", TRIGGERS)
        _expect(self, "patience", self.patience >= 1, "an integer >= 1")
        guard = "a number >= 0 (inf: no guard)"
        _expect(self, "guard_delta", self.guard_delta >= 0, guard)


@dataclass(frozen=True)
class TransportConfig:
    """``[transport]``: value dtype on the wire."""

    SECTION: ClassVar[str] = "transport"
    dtype: str = "float32"

    def check(self) -> None:
        """Raise :class:`ConfigError` unless ``dtype`` is one the codec can write."""
        from fedmap.core.codec import DTYPE_NAMES

        _expect_one_of(self, "dtype", DTYPE_NAMES)


@dataclass(frozen=True)
class AggregationConfig:
    """``[aggregation]``: how packed client vectors are combined."""

    SECTION: ClassVar[str] = "aggregation"
    rule: str = "mean"
    trim_fraction: float = 0.1
    norm_threshold: float = 10.0  # reject updates > this x the cohort's median norm; inf: off

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the first field out of range.

        Whether ``rule`` suits the method is :meth:`Config.check`'s question.
        """
        from fedmap.core.aggregate import AGGREGATION_RULES

        _expect_one_of(self, "rule", AGGREGATION_RULES)
        _expect(self, "trim_fraction", 0 <= self.trim_fraction < 0.5, "a number in [0, 0.5)")
        screen = "a number > 1 (inf: no norm screen)"
        _expect(self, "norm_threshold", self.norm_threshold > 1, screen)


@dataclass(frozen=True)
class FaultsConfig:
    """``[faults]``: simulated dropouts, stragglers, attackers, and how rounds cope."""

    SECTION: ClassVar[str] = "faults"
    dropout: float = 0.0
    straggler_fraction: float = 0.0
    deadline_s: float = math.inf
    min_clients: int = 1  # checked by Config.check: at most the clients sampled per round
    max_attempts: int = 10
    attack: str = "none"
    attacker_fraction: float = 0.0
    attack_scale: float = 10.0

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the first field out of range."""
        from fedmap.rounds.faults import ATTACKS

        unit = "a number in [0, 1]"
        _expect(self, "dropout", 0 <= self.dropout < 1, "a number in [0, 1)")
        _expect(self, "straggler_fraction", 0 <= self.straggler_fraction <= 1, unit)
        deadline = "a number > 0 (inf: no deadline)"
        _expect(self, "deadline_s", self.deadline_s > 0, deadline)
        _expect(self, "max_attempts", self.max_attempts >= 1, "an integer >= 1")
        _expect_one_of(self, "attack", ATTACKS)
        _expect(self, "attacker_fraction", 0 <= self.attacker_fraction <= 1, unit)
        scale = self.attack_scale
        _expect(self, "attack_scale", scale > 0 and math.isfinite(scale), "a positive number")


@dataclass(frozen=True)
class Config:
    """A whole experiment."""

    SECTION: ClassVar[str] = ""  # top-level keys: no prefix
    seed: int = 0
    rounds: int = 100
    device: str = "auto"
    engine: str = "sequential"
    cohort_chunk: int = 0  # vectorized: clients per batched program; 0 = auto (all on CUDA)
    compile: bool = False  # vectorized: torch.compile the per-step program
    checkpoint_every: int = 1  # rounds between checkpoints (the last round always gets one)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    client: ClientConfig = field(default_factory=ClientConfig)
    pruning: PruningConfig = field(default_factory=PruningConfig)
    transport: TransportConfig = field(default_factory=TransportConfig)
    aggregation: AggregationConfig = field(default_factory=AggregationConfig)
    faults: FaultsConfig = field(default_factory=FaultsConfig)

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the first bad field, in this order.

        Top-level keys, then each section in field order, then the checks that
        span sections (they may assume every section is valid), then the device
        (last: it imports torch and may ask the driver).
        """
        _expect(self, "rounds", self.rounds >= 1, "an integer >= 1")
        _expect(self, "seed", 0 <= self.seed < 2**32, "an integer in [0, 2**32)")
        _expect_one_of(self, "engine", ENGINES)
        _expect(self, "cohort_chunk", self.cohort_chunk >= 0, "an integer >= 0")
        _expect(self, "checkpoint_every", self.checkpoint_every >= 1, "an integer >= 1")
        sections = (self.data, self.model, self.client, self.pruning, self.transport)
        for section in (*sections, self.aggregation, self.faults):  # in field order
            section.check()
        self._check_across_sections()
        _check_device(self.device)

    def _check_across_sections(self) -> None:
        """The rule must merge the method's replies; min_clients must fit in a cohort."""
        from fedmap.methods.registry import all_methods
        from fedmap.rounds.sampling import cohort_size

        method = self.pruning.method
        own_masks = {cls.name: cls.sends_masks for cls in all_methods()}[method]
        rule = f"'mean' with pruning.method {method!r} (its clients send masks of their own)"
        _expect(self.aggregation, "rule", not own_masks or self.aggregation.rule == "mean", rule)
        cohort = cohort_size(self.data.num_clients, self.client.fraction)
        fits = 1 <= self.faults.min_clients <= cohort
        size = f"an integer in [1, {cohort}] (the clients sampled per round)"
        _expect(self.faults, "min_clients", fits, size)


def _check_device(device: str) -> None:
    """Accept ``auto``, ``cpu[:N]`` and ``cuda[:N]`` (the latter only where CUDA is)."""
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
    config.check()
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
