"""Typed stage configs: load them from YAML plus command-line overrides, validated at the door.

A config is a dataclass whose fields each carry a docstring (the string literal right below the
field, as in PEP 257 attribute docstrings); `--help` shows those docstrings. Loading rejects an
unknown key, a value of the wrong type, a missing input file or an out-of-range value with a
`ConfigError` whose message names the key and what is allowed; the CLI turns it into one line and
exit status 2.

A recipe file is either one stage's fields at the top level, or a mapping from command names
(`sft`, `corpus-train-quality`, `label-export`, ...) to their fields, so that one recipe can drive
the whole pipeline. A top-level `run_dir` is substituted for `${run_dir}` in every string.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import textwrap
import types
import typing
from functools import cache
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from align.errors import ConfigError

C = TypeVar("C")


@cache
def field_docs(cls: type) -> dict[str, str]:
    """The attribute docstrings of a dataclass (and its bases), keyed by field name."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, following in zip(body, body[1:], strict=False):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin in (list, tuple):
        args = get_args(tp)
        return f"a list of {_type_name(args[0])}" if args else "a list"
    if origin is dict:
        key, value = get_args(tp)
        return f"a mapping of {_type_name(key)} to {_type_name(value)}"
    if dataclasses.is_dataclass(tp):
        return f"a mapping with keys {', '.join(f.name for f in dataclasses.fields(tp))}"
    if tp is type(None):
        return "null"
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string", Path: "a path"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


def coerce(key: str, value: Any, tp: Any) -> Any:
    """Convert `value` (from YAML or a command-line string) to the annotated type `tp`."""
    origin = get_origin(tp)
    wrong = ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        is_null = value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
        if is_null and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(key, value, arg)
            except ConfigError:
                continue
        raise wrong
    if origin is Literal:
        for allowed in get_args(tp):
            if value == allowed or (isinstance(value, str) and str(allowed) == value):
                return allowed
        raise wrong
    if origin in (list, tuple):
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip().startswith("[") else value.split(",")
        if not isinstance(value, list | tuple):
            raise wrong
        (item_type, *_) = get_args(tp) or (Any,)
        items = [coerce(f"{key}[{i}]", v, item_type) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, dict):
            raise wrong
        key_type, value_type = get_args(tp)
        return {coerce(key, k, key_type): coerce(f"{key}.{k}", v, value_type) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, dict):
            raise wrong
        return build(tp, value, prefix=f"{key}.")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise wrong
    if tp is int:
        if isinstance(value, bool):
            raise wrong
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(float(value)) if float(value).is_integer() else int(value)
            except ValueError:
                raise wrong from None
        raise wrong
    if tp is float:
        if isinstance(value, bool):
            raise wrong
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise wrong from None
        if not math.isfinite(number):  # `inf` and `nan` parse as floats and train NaN models
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, dict | list):
            raise wrong
        return str(value)
    if tp is Path:
        if not isinstance(value, str | Path):
            raise wrong
        return Path(value)
    return value


def build(cls: type[C], values: dict[str, Any], prefix: str = "") -> C:
    """Build dataclass `cls` from a mapping, rejecting unknown keys and coercing types."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    unknown = [k for k in values if k not in fields]
    if unknown:
        raise ConfigError(
            f"{prefix}{unknown[0]}: unknown key for {cls.__name__}; allowed: {', '.join(sorted(fields))}"
        )
    kwargs = {name: coerce(prefix + name, value, hints[name]) for name, value in values.items()}
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(
            f"{prefix}{missing[0]}: required by {cls.__name__} ({_type_name(hints[missing[0]])})"
        )
    try:
        return cls(**kwargs)
    except ValueError as err:
        # Configs of the ground-floor `rollouts` package validate with plain ValueError (it
        # imports nothing of ours); both kinds become one-line config errors here.
        raise ConfigError(f"{prefix}{err}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error (YAML itself
    keeps the last value, so a pasted duplicate silently overrides the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_recipe(path: Path | str, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML recipe; `extends: other.yaml` (relative to this file) starts from another recipe.

    Sections of the extending recipe are merged key by key over the base's (nested mappings too;
    lists and scalars are replaced), so a smaller variant of a recipe states only what differs.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config: file not found: {path}")
    if path.resolve() in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, path.resolve()))
        raise ConfigError(f"extends: the recipes extend each other in a cycle: {cycle}")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader) or {}  # noqa: S506 (a SafeLoader)
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        where = getattr(err, "problem_mark", None)
        line = f" line {where.line + 1}:" if where is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(
            f"config: {path} is not valid YAML ({line.strip()} {problem})".replace("( ", "(")
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"config: {path} must hold a mapping of keys to values")
    base = data.pop("extends", None)
    if base is not None:
        data = merge(read_recipe(path.parent / str(base), (*_chain, path.resolve())), data)
    return data


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` merged over `base`: mappings recursively, everything else replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def substitute(values: Any, run_dir: str | None) -> Any:
    """Replace `${run_dir}` in every string of a nested recipe section."""
    if run_dir is None:
        return values
    if isinstance(values, str):
        return values.replace("${run_dir}", run_dir)
    if isinstance(values, list):
        return [substitute(v, run_dir) for v in values]
    if isinstance(values, dict):
        return {k: substitute(v, run_dir) for k, v in values.items()}
    return values


def load_config(
    cls: type[C],
    path: Path | str | None = None,
    overrides: dict[str, Any] | None = None,
    section: str | None = None,
    run_dir: str | None = None,
) -> C:
    """Load `cls` from a recipe file (its `section` if the file is a multi-stage recipe) and overrides.

    `run_dir`, when given, replaces the recipe's own `run_dir` in `${run_dir}` substitutions.
    """
    values: dict[str, Any] = {}
    if path is not None:
        recipe = read_recipe(path)
        run_dir = run_dir or recipe.get("run_dir")
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        if section is not None and section in recipe and section not in names:
            picked = recipe[section] or {}
            if not isinstance(picked, dict):
                raise ConfigError(f"{section}: the recipe section must be a mapping")
            values = dict(picked)
        elif section is not None and is_multi_stage(recipe):
            raise ConfigError(f"config: {path} has no '{section}' section")
        else:
            values = {k: v for k, v in recipe.items() if not (k == "run_dir" and "run_dir" not in names)}
        values = substitute(values, None if run_dir is None else str(run_dir))
    values.update(overrides or {})
    return build(cls, values)


def is_multi_stage(recipe: dict[str, Any]) -> bool:
    """True for a recipe that maps stage names to sections (it has a `pipeline` key)."""
    return "pipeline" in recipe


def to_dict(config: Any) -> dict[str, Any]:
    """A config as plain YAML-able values (paths as strings), e.g. to save beside a checkpoint."""

    def plain(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return {k: plain(v) for k, v in dataclasses.asdict(config).items()}


# Checks for __post_init__; each raises ConfigError naming the key.


def check_range(key: str, value: float, low: float | None = None, high: float | None = None) -> None:
    """Reject `value` outside [low, high] (either bound optional)."""
    if value != value or (low is not None and value < low) or (high is not None and value > high):  # noqa: PLR0124 (NaN)
        bounds = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
        raise ConfigError(f"{key}: {value!r} is out of range; allowed {bounds}")


def check_positive(key: str, value: float) -> None:
    """Reject zero or negative values."""
    if not value > 0:  # NaN too
        raise ConfigError(f"{key}: must be > 0, got {value!r}")


def check_exists(key: str, path: Path | str | None) -> None:
    """Reject a path that does not exist on disk (a file or a directory)."""
    if path is not None and not Path(path).exists():
        raise ConfigError(f"{key}: file not found: {path}")


def check_file(key: str, path: Path | str | None) -> None:
    """Reject a path that is missing or is not a file (a folder given for a data file)."""
    if path is None:
        return
    check_exists(key, path)
    if not Path(path).is_file():
        raise ConfigError(f"{key}: {path} is not a file")


def check_model_dir(key: str, path: Path | str) -> None:
    """Reject a path that is not a `save_pretrained` model directory (no config.json in it)."""
    check_exists(key, path)
    if not (Path(path) / "config.json").is_file():
        raise ConfigError(f"{key}: {path} is not a model directory (no config.json)")
