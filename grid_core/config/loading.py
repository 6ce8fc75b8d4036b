"""Reading a config: the converter, the checks across fields, unstructuring, and files.

`structure` builds a ClusterConfig from parsed data and reports every bad value with its path;
`load_file` reads TOML or the seed's YAML, through the cache of parsed configs (cache.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args, get_origin

import attrs

from grid_core.config import cache
from grid_core.config.models import (
    EXPOSING_FLAGS,
    INT_MAX,
    NODE_NAME,
    PLUGIN_SECTIONS,
    ClusterConfig,
    NodeConfig,
    NonNegative,
    Rule,
    _finite,
    _is_number,
    _Mismatch,
    _show,
)
from grid_core.config.seed import map_seed
from grid_core.errors import ConfigError

if TYPE_CHECKING:
    import cattrs  # imported with the converter, on first use: see _converter


def _type_label(t: Any) -> str:
    return {int: "int", float: "number", str: "string", bool: "true or false"}.get(t, str(t))


def _strict(t: type) -> Any:
    def hook(value: Any, _type: Any) -> Any:
        if t is float and _is_number(value):
            # nan and inf pass every comparison a bound makes, then break what uses them.
            if not _finite(value):
                raise _Mismatch(f"expected a finite number, got {_show(value)}")
            return float(value)
        if not isinstance(value, t) or (isinstance(value, bool) and t is not bool):
            raise _Mismatch(f"expected {_type_label(t)}, got {_show(value)}")
        if isinstance(value, int) and abs(value) > INT_MAX:  # what a C long (Ray, select, sleep) holds
            raise _Mismatch(f"too large, got {_show(value)}")
        return value

    return hook


def _literal_hook(t: Any) -> Any:
    choices = get_args(t)

    def hook(value: Any, _type: Any) -> Any:
        if value not in choices:
            raise _Mismatch(f"expected one of {', '.join(map(repr, choices))}, got {_show(value)}")
        return value

    return hook


def _any_hook(value: Any, _type: Any) -> Any:
    return value


def _capacity_hook(value: Any, _type: Any) -> Any:
    """`capacity_gb`: a number for every node, or a table of node name to number."""
    if value is None:
        return None
    return _converter().structure(value, dict[str, NonNegative] if isinstance(value, dict) else NonNegative)


def _make_converter() -> cattrs.Converter:
    import cattrs
    from cattrs.cols import list_structure_factory, mapping_structure_factory
    from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

    conv = cattrs.Converter(forbid_extra_keys=True)
    for t in (int, float, str, bool):
        conv.register_structure_hook(t, _strict(t))
    conv.register_structure_hook_factory(lambda t: get_origin(t) is Literal, _literal_hook)
    conv.register_structure_hook(Any, _any_hook)

    def annotated(t: Any) -> Callable[[Any, Any], Any]:
        base, *meta = get_args(t)
        rules = [m for m in meta if isinstance(m, Rule)]

        def hook(value: Any, _type: Any) -> Any:
            for rule in rules:
                value = rule.before(value)
            value = conv.structure(value, base)
            for rule in rules:
                rule.check(value)
            return value

        return hook

    conv.register_structure_hook_factory(lambda t: get_origin(t) is Annotated, annotated)
    conv.register_structure_hook(NonNegative | dict[str, NonNegative] | None, _capacity_hook)

    # cattrs takes any iterable as a list ("abc" as three tags) and fails on a non-table with an
    # AttributeError: require the container the model names, and say so.
    def shaped(kind: type, label: str, make: Callable[[Any], Callable[[Any, Any], Any]]) -> Any:
        def factory(t: Any) -> Callable[[Any, Any], Any]:
            inner = make(t)

            def hook(value: Any, _type: Any) -> Any:
                if not isinstance(value, kind):
                    raise _Mismatch(f"expected {label}, got {_show(value)}")
                return inner(value, _type)

            return hook

        return factory

    # `source` and `notes` are grid's records about a file, never keys in one.
    internal = {"source": override(omit=True), "notes": override(omit=True)}
    conv.register_structure_hook_factory(lambda t: get_origin(t) is list, shaped(
        list, "a list", lambda t: list_structure_factory(t, conv)))
    conv.register_structure_hook_factory(lambda t: get_origin(t) is dict, shaped(
        dict, "a table", lambda t: mapping_structure_factory(t, conv)))
    conv.register_structure_hook_factory(attrs.has, shaped(dict, "a table", lambda t: make_dict_structure_fn(
        t, conv, **(internal if t is ClusterConfig else {}))))  # type: ignore[arg-type]
    conv.register_unstructure_hook(ClusterConfig, make_dict_unstructure_fn(
        ClusterConfig, conv, **internal))  # type: ignore[arg-type]
    return conv


_built: cattrs.Converter | None = None


def _converter() -> cattrs.Converter:
    """The converter, built on first use: importing cattrs and building it cost more than all
    else in this module, and a command on the embedded default config structures nothing."""
    global _built
    if _built is None:
        _built = _make_converter()
    return _built


def _describe(exc: BaseException, _type: Any) -> str:
    from cattrs.errors import ForbiddenExtraKeysError

    if isinstance(exc, ForbiddenExtraKeysError):
        keys = ", ".join(repr(k) for k in sorted(exc.extra_fields))
        return f"unknown key{'s' if len(exc.extra_fields) > 1 else ''} {keys}"
    if isinstance(exc, KeyError):
        return "required key is missing"
    if isinstance(exc, _Mismatch | ValueError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _error_lines(exc: Exception, root: str = "") -> list[str]:
    from cattrs.v import transform_error

    lines = []
    for item in transform_error(exc, path=root, format_exception=_describe):
        message, _, path = item.rpartition(" @ ")
        path = path.lstrip(".")
        # A missing key is reported at its parent; cattrs puts the key in the message.
        lines.append(f"{path}: {message}" if path else message)
    return lines


def _structure(data: Any, model: Any, root: str = "") -> tuple[Any, list[str]]:
    """`data` as `model`, or None and one line per bad value."""
    conv = _converter()
    import cattrs

    try:
        return conv.structure(data, model), []
    except cattrs.BaseValidationError as exc:
        return None, _error_lines(exc, root)
    except (_Mismatch, ValueError, TypeError) as exc:
        return None, [f"{root}: {exc}" if root else str(exc)]


def _fail(source: str, problems: list[str]) -> ConfigError:
    return ConfigError(f"{source}: " + "\n  ".join(["invalid config:", *problems]))


def structure(data: Any, source: str) -> ClusterConfig:
    """Build a ClusterConfig from parsed data, or raise ConfigError listing every problem."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a table of settings at the top, got {type(data).__name__}")
    config, problems = _structure(data, ClusterConfig)
    if isinstance(data.get("plugins"), dict):  # checked with the rest, not only once it is right
        problems += _plugin_problems(data["plugins"], config)
    if config is None:
        raise _fail(source, problems)
    config = attrs.evolve(config, source=source)
    config, notes = map_seed(config, problems)
    problems += _check(config)
    if problems:
        raise _fail(source, problems)
    return attrs.evolve(config, notes=tuple(notes))


def _check(config: ClusterConfig) -> list[str]:
    """Rules across fields, on the config with the seed's keys already mapped."""
    problems = []
    if not config.nodes:
        problems.append("nodes: at least one node is required")
    seen: set[str] = set()
    for i, node in enumerate(config.nodes):
        if not NODE_NAME.match(node.name):
            problems.append(f"nodes[{i}].name: {_show(node.name)} may hold only letters, digits, '.', '_' and '-'")
        if node.name in seen:
            problems.append(f"nodes[{i}].name: duplicate node name {node.name!r}")
        seen.add(node.name)
        problems += _check_start_params(config, node, f"nodes[{i}].ray_start_params")
        if node.gpus is not None and node.gpu_count is not None and len(node.gpus) != node.gpu_count:
            problems.append(f"nodes[{i}]: gpu_count = {node.gpu_count} but gpus lists {len(node.gpus)} "
                            f"GPU{'' if len(node.gpus) == 1 else 's'}; give one of them, or make them agree")
    heads = [n.name for n in config.nodes if n.is_head]
    if len(heads) > 1:
        problems.append(f"nodes: more than one head ({', '.join(heads)})")
    log_path = config.logging.file_path
    if log_path is not None:
        folder = Path(log_path).parent
        if not log_path or Path(log_path).is_dir():
            problems.append(f"logging.file_path: {log_path!r} is not a file name")
        elif not folder.is_dir():
            problems.append(f"logging.file_path: directory {str(folder)!r} does not exist")
        elif not os.access(folder, os.W_OK | os.X_OK) and not os.access(log_path, os.W_OK):
            problems.append(f"logging.file_path: cannot write in {str(folder)!r}")
    return problems


def _plugin_problems(plugins: dict[Any, Any], config: ClusterConfig | None) -> list[str]:
    """The plugin sections whose shape grid knows (PLUGIN_SECTIONS), as their plugin reads them."""
    problems = []
    names = {n.name for n in config.nodes} if config else None
    for name, model in PLUGIN_SECTIONS.items():
        if isinstance(plugins.get(name), dict):  # a non-table is reported with `plugins` itself
            root = f"plugins[{name!r}]"
            section, errors = _structure(plugins[name], model, root)
            problems += errors
            table = getattr(section, "capacity_gb", None)
            if isinstance(table, dict) and names is not None:
                problems += [f"{root}.capacity_gb[{node!r}]: no node named {node!r}"
                             for node in table if node not in names]
    return problems


def start_flag(key: str) -> str:
    """A ray_start_params key as the `ray start` flag it sets: `object_store_memory` is `object-store-memory`."""
    return key.replace("_", "-").lstrip("-")


def _check_start_params(config: ClusterConfig, node: NodeConfig, path: str) -> list[str]:
    problems = []
    for key, value in node.ray_start_params.items():
        flag, where = start_flag(key), f"{path}[{key!r}]"
        if flag in EXPOSING_FLAGS and not config.backend.allow_public_bind:
            problems.append(f"{where}: may bind Ray beyond this node's address; set "
                            "backend.allow_public_bind = true to allow it")
        elif flag == "resources":
            problems += [f"{where}{sub}" for sub in _resource_problems(value)]
        elif isinstance(value, dict):
            problems.append(f"{where}: expected a string, number or true/false, got {_show(value)}")
    return problems


def _resource_problems(value: Any) -> list[str]:
    """Custom resources: a table or a JSON object of name -> non-negative number."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            return [f": not a JSON object: {exc}"]
    if not isinstance(value, dict):
        return [f": expected a table or JSON object of name -> number, got {_show(value)}"]
    problems = []
    for name, amount in value.items():
        if not name or not _is_number(amount) or not _finite(amount) or amount < 0:
            problems.append(f"[{name!r}]: expected a resource name with a non-negative number, got {_show(amount)}")
    return problems


def unstructure(config: ClusterConfig) -> dict[str, Any]:
    """The config as plain data, without unset values (TOML has no null)."""

    def prune(value: Any) -> Any:
        if isinstance(value, dict):
            pruned = {k: prune(v) for k, v in value.items() if v is not None}
            return {k: v for k, v in pruned.items() if v != {}}
        if isinstance(value, list):
            return [prune(v) for v in value]
        return value

    # attrs' asdict, not cattrs: the same data (tests/test_config.py checks), without generating
    # code for twenty classes, which cost every request to the grid service 6 to 13 ms.
    import attr

    internal = (attrs.fields(ClusterConfig).source, attrs.fields(ClusterConfig).notes)
    data = attr.asdict(config, retain_collection_types=False, filter=lambda a, _v: all(a is not f for f in internal))
    return prune(data)  # type: ignore[no-any-return]


def parse_file(path: Path) -> Any:
    """Read TOML, or YAML (the seed's format) by extension."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(text)
        except (yaml.YAMLError, ValueError) as exc:  # ValueError: a date YAML cannot build
            raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    import tomllib  # here: a cached config is never parsed

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def load_file(path: Path | str) -> ClusterConfig:
    """The file's config, from the cache of parsed configs when its bytes are those seen before."""
    path = Path(path)
    try:
        key = cache.key(path, path.read_bytes())
    except OSError:
        return structure(parse_file(path), str(path))  # which says what is wrong with the file
    kept = cache.get(path, key)
    if kept is not None:
        return kept
    config = structure(parse_file(path), str(path))
    cache.keep(path, key, config)
    return config


