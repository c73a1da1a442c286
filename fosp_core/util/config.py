"""The project's one config system: nested dataclasses <-> plain dicts <-> YAML files.

Every config in the project (agent, environment, ...) is a tree of dataclasses with defaults.
This module knows nothing about any of them; it only walks dataclass fields and their type
hints, so a YAML file is checked against the dataclass that will hold it:

- ``to_dict(obj)``: dataclass tree -> plain dict (tuples become lists, so YAML stays plain).
- ``from_dict(cls, data)``: plain dict -> dataclass tree. Unknown keys are an error that names
  the key and its dotted path; a missing key takes the field's default, so a YAML file only
  needs the values it changes.
- ``merge(obj, data)``: a copy of ``obj`` with the (possibly partial, nested) ``data`` applied.
- ``load_yaml(cls, path)`` / ``save_yaml(obj, path)``: the same through a file; saving is
  atomic (``fosp_core.util.files.atomic_write``).
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

from fosp_core.util.errors import UserError

T = TypeVar("T")


class ConfigError(UserError):
    """A config dict or YAML file does not fit its dataclass."""


def to_dict(obj: Any) -> Any:
    """A dataclass tree as plain dicts, lists and scalars (ready for ``yaml.safe_dump``)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(item) for item in obj]
    if isinstance(obj, dict):
        return {key: to_dict(value) for key, value in obj.items()}
    return obj


def from_dict(cls: type[T], data: dict[str, Any], path: str = "") -> T:
    """Build dataclass ``cls`` from a plain dict, checking keys and value types.

    ``path`` is the dotted location of ``data`` inside a larger config; it only makes error
    messages point at the right place.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"config key '{path or '<root>'}': expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            where = f"{path}.{key}" if path else str(key)
            raise ConfigError(
                f"unknown config key '{where}' for {cls.__name__} "
                f"(valid keys: {', '.join(sorted(fields))})"
            )
    kwargs = {}
    for name, value in data.items():
        where = f"{path}.{name}" if path else name
        kwargs[name] = _convert(value, hints[name], where)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:  # a missing required field, or __post_init__
        raise ConfigError(f"config '{path or cls.__name__}': {error}") from error


def merge(obj: T, data: dict[str, Any]) -> T:
    """A copy of dataclass ``obj`` with the nested overrides in ``data`` applied."""
    return from_dict(type(obj), deep_update(to_dict(obj), data))


def dotted_overrides(items: list[str]) -> dict[str, Any]:
    """``["fosp.pex_temperature=100", "seed=3"]`` -> ``{"fosp": {"pex_temperature": 100},
    "seed": 3}``, for ``merge``. Values are read as YAML (numbers, true/false, strings)."""
    flat: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not all(key.split(".")):
            raise ConfigError(f"bad override {item!r}; expected KEY=VALUE, e.g. fosp.cost_limit=0")
        flat[key] = yaml.safe_load(raw) if raw else ""
    return nest(flat)


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"fosp.cost_max": 0.1, "seed": 3}`` -> ``{"fosp": {"cost_max": 0.1}, "seed": 3}``:
    dotted keys as ``merge`` takes them."""
    result: dict[str, Any] = {}
    for key, value in flat.items():
        node, parts = result, str(key).split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"key {key!r} conflicts with an earlier one")
        node[parts[-1]] = value
    return result


def differences(was: Any, now: Any) -> list[str]:
    """The dotted keys where two configs differ, as 'key: was X, now Y'."""
    flat_was, flat_now = _flatten(to_dict(was)), _flatten(to_dict(now))
    return [f"{key}: was {flat_was.get(key)!r}, now {flat_now.get(key)!r}"
            for key in sorted(set(flat_was) | set(flat_now))
            if flat_was.get(key) != flat_now.get(key)]


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix: data}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def load_yaml(cls: type[T], path: str | os.PathLike) -> T:
    """Read a YAML file into dataclass ``cls`` (an empty file gives the defaults)."""
    from fosp_core.util.files import read_mapping

    return from_dict(cls, read_mapping(path))


def save_yaml(obj: Any, path: str | os.PathLike) -> None:
    """Write a dataclass tree to YAML atomically: readers see the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from fosp_core.util.files import write_text

    write_text(path, yaml.safe_dump(to_dict(obj), sort_keys=False, default_flow_style=False))


def deep_update(base: dict[str, Any], updates: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_update(merged[key], value)
        else:
            merged[key] = value
    return merged


def _convert(value: Any, hint: Any, path: str) -> Any:
    """``value`` from YAML turned into the type ``hint`` promises, or a ConfigError."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)

    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, path)
    if origin is Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(value, option, path)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError("; ".join(errors))
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"config key '{path}': {value!r} is not one of {list(args)}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{path}': expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"config key '{path}': expected {len(args)} items, got {value!r}")
            pairs = enumerate(zip(value, args, strict=True))
            items = [_convert(v, a, f"{path}[{i}]") for i, (v, a) in pairs]
        else:
            item_hint = args[0] if args else Any
            items = [_convert(v, item_hint, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{path}': expected a mapping, got {value!r}")
        value_hint = args[1] if args else Any
        return {k: _convert(v, value_hint, f"{path}.{k}") for k, v in value.items()}
    if hint is float:
        # YAML 1.1 reads "1e-4" (no dot) as a string; a config author means the number.
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is bool or hint is str:
        if isinstance(value, hint):
            return value
    elif isinstance(hint, type) and isinstance(value, hint):
        return value
    name = getattr(hint, "__name__", str(hint))
    raise ConfigError(f"config key '{path}': expected {name}, got {value!r}")
