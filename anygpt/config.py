"""The one way configuration is read: typed dataclasses are the schema, YAML files and ``a.b=c``
overrides fill them in.

Every ``*Config`` / recipe dataclass in the package is built here, through OmegaConf structured
configs: OmegaConf checks keys against the dataclass and converts values to the annotated types
(``1e-4``, which YAML 1.1 reads as a string, becomes a float for a float field), including nested
dataclasses, ``list[X]``, ``dict[str, X]`` and ``X | None``. This module only turns its errors into
one line naming the file and key, and keeps the project's override syntax: ``a.b=c`` with the
value parsed as YAML (``steps=20``, ``data.train=[a,b]``, ``model.from_config=null``)::

    cfg = load(TrainConfig, "train/tiny.yaml", ["optim.lr=1e-4"])   # a TrainConfig
    save(cfg, "runs/tiny/config.yaml")                                # load(TrainConfig, that) == cfg

Values are literal: a ``${...}`` in a string is kept as written, not resolved as an OmegaConf
interpolation (recipes and generation settings are user text).
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

__all__ = ["ConfigError", "build", "load", "parse_overrides", "parse_assignments", "to_dict", "to_yaml", "save"]

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration problem, said in one line that names the file (when there is one) and the key."""


def parse_assignments(items: Sequence[str], option: str = "override") -> dict[str, Any]:
    """``["k=v", ...]`` as a flat ``{k: v}``, each value parsed as YAML (``3`` → 3, ``true`` → True,
    ``[a,b]`` → a list, ``null`` → None, anything else a string); ``option`` names the flag in errors."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, val = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{option} {item!r}: expected KEY=VALUE")
        try:
            out[key] = yaml.safe_load(val)
        except yaml.YAMLError as e:
            raise ConfigError(f"{option} {item!r}: the value is not valid YAML ({str(e).splitlines()[0]})") from None
    return out


def parse_overrides(items: Sequence[str], option: str = "override") -> dict[str, Any]:
    """``["a.b=c", ...]`` as one nested mapping ``{"a": {"b": c}}`` (values parsed as YAML; later
    items win). :func:`build` applies its string overrides one at a time instead, so that
    ``a=null a.b=1`` replaces the section ``a`` with ``{b: 1}``."""
    out: dict[str, Any] = {}
    for key, value in parse_assignments(items, option).items():
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = value
    return out


def build(cls: type[T], data: Mapping[str, Any] | T | None = None, overrides: Mapping[str, Any] | Sequence[str] = (),
          *, where: str | os.PathLike | None = None, what: str = "config") -> T:
    """An instance of the dataclass ``cls`` from ``data`` (a mapping, or an instance of ``cls`` to
    start from) and then ``overrides`` (a nested mapping, or ``a.b=c`` strings).

    Raises :class:`ConfigError` in one line: ``"<where>: unknown <what> key a.b; valid: ..."``,
    ``"<where>: <what> key a.b: expected int, got 'x'"`` or ``"... missing required <what> key a.b"``.
    """
    prefix = f"{where}: " if where else ""
    if data is not None and not isinstance(data, Mapping) and not isinstance(data, cls):
        raise ConfigError(f"{prefix}expected a mapping of {what} keys, got {type(data).__name__}")
    # each ``a.b=c`` is its own layer, applied in order: ``a=null a.b=1`` gives a fresh ``{b: 1}``
    override_layers = [dict(overrides)] if isinstance(overrides, Mapping) else [parse_overrides([o]) for o in overrides]
    schema = OmegaConf.structured(cls)
    OmegaConf.set_readonly(schema, False)  # frozen dataclasses give read-only schemas; the instance stays frozen
    try:
        base = to_dict(data) if isinstance(data, cls) else dict(data or {})
        layers = [_literal(layer) for layer in (base, *override_layers)]
        for layer in layers:
            _check_shape(cls, layer, "", what)
        merged = OmegaConf.merge(schema, *layers)
        return typing.cast(T, OmegaConf.to_object(merged))
    except ConfigError as e:
        raise ConfigError(prefix + str(e)) from None
    except OmegaConfBaseException as e:
        raise ConfigError(prefix + _explain(cls, e, what)) from None


def load(cls: type[T], path: str | os.PathLike | None, overrides: Mapping[str, Any] | Sequence[str] = (),
         *, what: str = "config", file_kind: str = "config file") -> T:
    """``cls`` from the YAML file ``path`` (defaults when None) plus ``overrides``; errors name the
    file (a missing one: ``"<path>: no such <file_kind>"``)."""
    data: Any = None
    if path is not None:
        from anygpt.utils import read_yaml

        data = read_yaml(path, file_kind)
    return build(cls, data, overrides, where=path, what=what)


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass instance as plain nested dicts and lists (tuples become lists), ready for YAML/JSON."""
    return _plain(dataclasses.asdict(obj))


def to_yaml(obj: Any) -> str:
    """The dataclass ``obj`` as YAML, keys in field order; :func:`load` reads it back to an equal object."""
    return yaml.safe_dump(to_dict(obj), sort_keys=False)


def save(obj: Any, path: str | os.PathLike) -> None:
    """Write :func:`to_yaml` of ``obj`` to ``path`` atomically."""
    from anygpt.utils import atomic_write_text

    atomic_write_text(path, to_yaml(obj))


# ---------------------------------------------------------------- internals
def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def _literal(x: Any) -> Any:
    """Escape ``${`` so OmegaConf keeps strings as written instead of resolving interpolations."""
    if isinstance(x, str):
        return x.replace("${", "\\${")
    if isinstance(x, Mapping):
        return {k: _literal(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_literal(v) for v in x]
    return x


def _check_shape(hint: Any, value: Any, key: str, what: str) -> None:
    """A section given a non-mapping, or a list given a mapping, named by key (OmegaConf's own
    message for these names neither the key nor the type)."""
    if value is None:
        return
    hint = _strip_optional(hint)
    origin = typing.get_origin(hint)
    wants_map = dataclasses.is_dataclass(hint) or hint is dict or origin in (dict, Mapping)
    wants_list = hint in (list, tuple) or origin in (list, tuple)
    if (wants_map and not isinstance(value, Mapping)) or (wants_list and not isinstance(value, (list, tuple))):
        got = type(value).__name__
        raise ConfigError(f"{what} key {key}: expected {_type_name(hint)}, got {got} {value!r}"[:300])
    if dataclasses.is_dataclass(hint):
        hints = typing.get_type_hints(hint)
        for k, v in value.items():
            if k in hints:
                _check_shape(hints[k], v, f"{key}.{k}" if key else str(k), what)


def _field_type(cls: Any, full_key: str) -> Any:
    """The annotated type at ``full_key`` (``a.b[0].c``) below the dataclass ``cls``; None if unknown."""
    hint: Any = cls
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", full_key):
        hint = _strip_optional(hint)
        if part.startswith("["):
            args = typing.get_args(hint)
            hint = args[0] if args else None
        elif dataclasses.is_dataclass(hint):
            hint = typing.get_type_hints(hint).get(part)
        elif typing.get_origin(hint) in (dict, Mapping):
            hint = typing.get_args(hint)[1] if typing.get_args(hint) else None
        else:
            return None
        if hint is None:
            return None
    return hint


def _strip_optional(hint: Any) -> Any:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return hint


def _type_name(hint: Any) -> str:
    if hint is type(None):
        return "null"
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    if isinstance(hint, type) and not typing.get_args(hint):
        return "a mapping" if dataclasses.is_dataclass(hint) else hint.__name__
    return str(hint).replace("typing.", "")


def _explain(cls: Any, e: OmegaConfBaseException, what: str) -> str:
    key = str(getattr(e, "full_key", None) or getattr(e, "key", None) or "")
    if isinstance(e, ConfigKeyError):
        owner = getattr(e, "object_type", None)
        valid = sorted(f.name for f in dataclasses.fields(owner)) if dataclasses.is_dataclass(owner) else []
        return f"unknown {what} key {key}" + (f"; valid: {', '.join(valid)}" if valid else "")
    if isinstance(e, MissingMandatoryValue):
        return f"missing required {what} key {key}"
    hint = _field_type(cls, key) if key else None
    value = getattr(e, "value", None)
    if hint is not None and value is not None:
        return f"{what} key {key}: expected {_type_name(hint)}, got {value!r}"
    msg = str(getattr(e, "msg", e)).splitlines()[0]
    return f"{what} key {key}: {msg}" if key else msg
