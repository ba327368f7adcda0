"""A sweep file, read: one base config, a grid of overrides, one validated config per point.

A sweep file names a base experiment, fixed overrides (``[set]``) and a grid
(``[grid]``): each grid key is a config key with a list of values, or a list of
tables that set several keys together and carry a ``label`` (a data setting:
``{label = "dir0.5", "data.partition" = "dirichlet", "data.alpha" = 0.5}``). The
runs are the cartesian product. A method that does not prune (dense FedAvg: the
registry's ``prunes``) ignores every pruning key, so its points collapse to one
run per remaining combination instead of repeating it once per target sparsity.
Without ``out`` (in the file or ``--out``), runs go to ``runs/<sweep file stem>``,
a folder git ignores: run directories are tens of MB, kept out of the repository.
Every point is validated here, before anything runs (:mod:`fedmap.runs.sweep`).
"""

from __future__ import annotations

import fnmatch
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedmap.errors import ConfigError
from fedmap.methods.registry import get_method, method_names
from fedmap.runs.config import Config, apply_override, config_from_dict, dump_toml, read_toml

PRUNING_ONLY_PREFIX = "pruning."  # keys a method that does not prune ignores
DEFAULT_OUT = Path("runs")  # git-ignored (/runs/ in .gitignore): a sweep's runs stay out of git


@dataclass(frozen=True)
class SweepRun:
    """One point of the grid: its directory name, overrides and resolved config."""

    name: str
    overrides: dict[str, Any]
    config: Config


@dataclass(frozen=True)
class Sweep:
    """A parsed and validated sweep file."""

    path: Path
    base: Path
    out: Path
    parallel: int
    runs: list[SweepRun]


def load_sweep(
    path: Path,
    out: Path | None = None,
    parallel: int | None = None,
    overrides: list[str] | None = None,
    only: list[str] | None = None,
) -> Sweep:
    """Read ``path``, expand its grid and validate every run's config (nothing is written).

    ``overrides`` (``key=value``, as ``--set``) apply to every run after ``[set]``;
    ``only`` keeps the runs whose names match one of its globs.
    """
    raw = read_toml(path, "sweep")
    unknown = set(raw) - {"base", "out", "parallel", "set", "grid"}
    if unknown:
        raise ConfigError(f"{path}: unknown sweep keys {sorted(unknown)}")
    if "base" not in raw:
        raise ConfigError(f"{path}: 'base' (the experiment TOML the grid varies) is missing")
    base = (path.parent / str(raw["base"])).resolve()
    if not base.is_file():
        raise ConfigError(f"{path}: base config not found: {base}")
    chosen_out = out or Path(str(raw.get("out", DEFAULT_OUT / path.stem)))
    workers = parallel if parallel is not None else raw.get("parallel", 1)
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"{path}: parallel must be an integer >= 1, got {workers!r}")
    fixed = _flatten(raw.get("set", {}), "set")
    for override in overrides or []:
        key, sep, _ = override.partition("=")
        scratch: dict[str, Any] = {}
        apply_override(scratch, override)
        fixed[key.strip()] = _flatten(scratch, "--set")[key.strip()]
    grid = raw.get("grid", {})
    if not isinstance(grid, dict):
        raise ConfigError(f"{path}: [grid] must be a table of lists")
    base_raw = read_toml(base)
    runs = expand(base_raw, fixed, grid)
    if only:
        runs = [r for r in runs if any(fnmatch.fnmatchcase(r.name, g) for g in only)]
        if not runs:
            raise ConfigError(f"--only {only}: no run of {path} matches")
    return Sweep(path, base, chosen_out, workers, runs)


def expand(base_raw: dict[str, Any], fixed: dict[str, Any], grid: dict[str, Any]) -> list[SweepRun]:
    """The grid's runs in file order, dense duplicates collapsed, each config validated."""
    axes: list[list[tuple[str, dict[str, Any]]]] = []
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid.{key}: expected a non-empty list")
        axis = []
        for value in values:
            if isinstance(value, dict):
                label = str(value.get("label", "")).strip()
                if not label:
                    raise ConfigError(f"grid.{key}: every table needs a 'label'")
                settings = _flatten({k: v for k, v in value.items() if k != "label"}, key)
                axis.append((label, settings))
            else:
                short = key.rsplit(".", 1)[-1]
                label = str(value) if key == "pruning.method" else f"{short}{value}"
                axis.append((label, {key: value}))
        axes.append(axis)
    runs: dict[str, SweepRun] = {}
    for point in itertools.product(*axes) if axes else [()]:
        overrides = dict(fixed)
        for _, settings in point:
            overrides.update(settings)
        method = overrides.get("pruning.method", base_raw.get("pruning", {}).get("method"))
        labels = [label for label, settings in point if not _dense_ignores(method, settings)]
        if not _prunes(method):
            overrides = {k: v for k, v in overrides.items() if k not in _pruning_axes(point)}
        name = "-".join(_safe(label) for label in labels) or "run"
        raw = _deep_copy(base_raw)
        for key, value in overrides.items():
            apply_override(raw, f"{key}={_toml_literal(value)}")
        try:
            config = config_from_dict(raw)
        except ConfigError as error:
            raise ConfigError(f"sweep run {name}: {error}") from error
        if name in runs:  # dense FedAvg's collapsed points are the same run; anything else clashes
            if dump_toml(runs[name].config) != dump_toml(config):
                raise ConfigError(
                    f"sweep runs {runs[name].overrides} and {overrides} are both named {name!r}: "
                    "give their grid tables distinct labels"
                )
            continue
        runs[name] = SweepRun(name, overrides, config)
    return list(runs.values())


def _flatten(table: Any, where: str) -> dict[str, Any]:
    """``{"data": {"alpha": 0.5}}`` and ``{"data.alpha": 0.5}`` alike -> dotted keys."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table of config keys")
    flat: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            for sub, inner in _flatten(value, f"{where}.{key}").items():
                flat[f"{key}.{sub}"] = inner
        else:
            flat[key] = value
    return flat


def _prunes(method: Any) -> bool:
    """Whether pruning keys apply to ``method`` (an unknown name: yes; validation names it)."""
    return not isinstance(method, str) or method not in method_names() or get_method(method).prunes


def _dense_ignores(method: Any, settings: dict[str, Any]) -> bool:
    """Whether an axis value only sets pruning keys that a method that does not prune ignores."""
    return not _prunes(method) and all(
        k.startswith(PRUNING_ONLY_PREFIX) and k != "pruning.method" for k in settings
    )


def _pruning_axes(point: tuple[tuple[str, dict[str, Any]], ...]) -> set[str]:
    return {
        k
        for _, settings in point
        for k in settings
        if k.startswith(PRUNING_ONLY_PREFIX) and k != "pruning.method"
    }


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "._=+" else "_" for c in label)


def _toml_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def _deep_copy(raw: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in raw.items()}
