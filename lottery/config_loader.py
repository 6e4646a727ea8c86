"""Reading a config: YAML (a shipped name or a file) + ``key=value`` overrides -> a checked dataclass.

Every key, type and value is checked against the dataclass (a field's ``Annotated`` checks, see
config_checks.py), and the error names the key, so a typo on the command line fails at once instead of
being silently ignored. A file or override that is not YAML is refused the same way, in one line. The
schema itself is lottery/config.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from pathlib import Path
from typing import Any

import yaml

from lottery.resources import CONFIGS, NotShipped, shipped_dir, shipped_file

if typing.TYPE_CHECKING:
    from importlib.resources.abc import Traversable

# the shipped run configs (lottery/configs/), found through lottery.resources like every shipped file
CONFIG_DIR = shipped_dir(CONFIGS)


class ConfigError(ValueError):
    """A run config or an override that does not fit the schema; the message names the key."""


def _coerce(value: Any, kind: Any, key: str) -> Any:
    """Turn a YAML/command-line value into the annotated type, or raise naming the key.

    ``Annotated[int, Range(ge=1)]``: the value is coerced to ``int``, then every check of the
    annotation that has a ``check(value, key)`` runs on it.
    """
    origin = typing.get_origin(kind)
    if origin is typing.Annotated:
        base, *checks = typing.get_args(kind)
        coerced = _coerce(value, base, key)
        for check in checks:
            check.check(coerced, key)
        return coerced
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return _build(kind, value, key + ".")
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        key_type, value_type = typing.get_args(kind)
        return {_coerce(k, key_type, key): _coerce(v, value_type, f"{key}.{k}") for k, v in value.items()}
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        kinds = typing.get_args(kind)
        if len(kinds) == 2 and kinds[1] is Ellipsis:
            return tuple(_coerce(v, kinds[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(kinds):
            raise ConfigError(f"{key}: expected {len(kinds)} values, got {len(value)}")
        return tuple(_coerce(v, k, key) for v, k in zip(value, kinds, strict=True))
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, str):
        # YAML 1.1 reads "1e-4" (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is str and isinstance(value, str):
        return value
    raise ConfigError(f"{key}: expected {getattr(kind, '__name__', kind)}, got {value!r}")


def _field_default(spec: dataclasses.Field) -> Any:
    if spec.default is not dataclasses.MISSING:
        return spec.default
    if spec.default_factory is not dataclasses.MISSING:
        return spec.default_factory()
    return None


def _is_required(spec: dataclasses.Field) -> bool:
    return spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING


def _build(cls: type, values: dict[str, Any], prefix: str = "", base: Any = None) -> Any:
    """`cls` from `values`; keys not given keep `base`'s values, or the field defaults.

    A section given in part (``train.steps=60`` alone) is laid over that section's default, so a
    config whose default section differs from the section class's (a fine-tune's ``train``) keeps it.
    """
    hints = typing.get_type_hints(cls, include_extras=True)
    specs = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(specs))
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + u for u in unknown)}; known: {sorted(specs)}"
        )
    if base is None:
        missing = [n for n, f in specs.items() if n not in values and _is_required(f)]
        if missing:
            raise ConfigError(f"{', '.join(prefix + m for m in missing)}: required, and not given")
    built = {}
    for key, value in values.items():
        kind = hints[key]
        if dataclasses.is_dataclass(kind) and isinstance(value, dict):
            under = getattr(base, key) if base is not None else _field_default(specs[key])
            built[key] = _build(kind, value, f"{prefix}{key}.", under)
        else:
            built[key] = _coerce(value, kind, prefix + key)
    try:
        return dataclasses.replace(base, **built) if base is not None else cls(**built)
    except ConfigError as err:  # a check of __post_init__ that relates fields names them, not the section
        raise ConfigError(f"{prefix[:-1]}: {err}" if prefix else str(err)) from None


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: {part} is not a section")
    node[leaf] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``train.steps=50`` -> (``train.steps``, 50); the value is parsed as YAML (numbers, lists, maps)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not key=value (e.g. train.steps=50)")
    key, raw = text.split("=", 1)
    if not raw.strip():
        return key.strip(), ""
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: the value is not valid YAML: {yaml_problem(err)}") from None


def yaml_problem(err: yaml.YAMLError) -> str:
    """PyYAML's error as one line: what it was parsing, the problem, and where (line, column)."""
    parts = [getattr(err, "context", None), getattr(err, "problem", None)]
    text = ", ".join(p for p in parts if p) or str(err).splitlines()[0]
    mark = getattr(err, "problem_mark", None)
    return f"{text} (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else text


def read_yaml(path: Path | Traversable) -> dict[str, Any]:
    """A config file's top-level mapping (empty file: {}); anything else is a `ConfigError` naming it."""
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {yaml_problem(err)}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot be read ({err})") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: top level must be a mapping of config keys, got {type(loaded).__name__}")
    return loaded


def config_path(name_or_file: str) -> Path | Traversable:
    """A shipped config name (``pretrain-uniter-mini``) or a YAML file path.

    Anything that looks like a file (a .yaml/.yml suffix, or an existing path) is the user's own file;
    only a bare name is looked up among the shipped configs, so a local file is never shadowed.
    """
    path = Path(name_or_file)
    if path.suffix in {".yaml", ".yml"} or path.exists():
        if not path.is_file():
            raise ConfigError(
                f"config file {path} " + ("is not a file" if path.exists() else "does not exist")
            )
        return path
    try:
        return shipped_file(CONFIGS, name_or_file, ".yaml")
    except NotShipped as err:
        raise ConfigError(
            f"no config named {name_or_file!r}; shipped configs: {err.known}, or pass a .yaml path"
        ) from None


def load_config(name_or_file: str | None, overrides: list[str], cls: type) -> Any:
    """Read a YAML config (or start from the defaults when None), apply overrides, type-check it."""
    tree = read_yaml(config_path(name_or_file)) if name_or_file else {}
    for text in overrides:
        key, value = parse_override(text)
        _set_path(tree, key, value)
    try:
        return _build(cls, tree)
    except ConfigError as err:
        where = f"{name_or_file}: " if name_or_file else ""
        raise ConfigError(f"{where}{err}") from None


def to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dict (tuples as lists), the form written to YAML/JSON."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def to_yaml(config: Any) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)


# Field metadata key: the field came after runs were first named; at this value (its default) it is
# left out of digests, so adding an option never moves the run directories, theta0s and ticket ids
# of the configs that do not use it.
ADDED = "added_later"


def canonical_tree(config: Any) -> dict[str, Any]:
    """`to_dict` of a config, less each ``ADDED`` field that holds its default: what digests hash."""
    tree = to_dict(config)
    _drop_added_defaults(config, tree)
    return tree


def _drop_added_defaults(config: Any, tree: dict[str, Any]) -> None:
    for spec in dataclasses.fields(config):
        value = getattr(config, spec.name)
        if ADDED in spec.metadata and value == spec.metadata[ADDED]:
            del tree[spec.name]
        elif dataclasses.is_dataclass(value):
            _drop_added_defaults(value, tree[spec.name])
        elif isinstance(value, (list, tuple)):
            for item, subtree in zip(value, tree[spec.name], strict=True):
                if dataclasses.is_dataclass(item):
                    _drop_added_defaults(item, subtree)


def digest(config: Any, *, spaced: bool = False) -> str:
    """sha256 (hex) of the canonical JSON of a config (or a dict of plain values): what it describes.

    ``spaced``: JSON's default separators instead of the compact ones. IMP run directories were first
    named with them, and a ticket records its run directory's name, so IMP keeps that form: the same
    config must keep giving the same directory and the same ticket ids.
    """
    tree = canonical_tree(config) if dataclasses.is_dataclass(config) else config
    separators = (", ", ": ") if spaced else (",", ":")
    canonical = json.dumps(tree, sort_keys=True, separators=separators)
    return hashlib.sha256(canonical.encode()).hexdigest()
