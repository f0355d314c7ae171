"""Read and validate YAML config files into frozen pydantic models.

Every failure becomes a ConfigError naming the file, the key path
(``models[2].max_model_len``), the bad value and what is allowed. Duplicate
YAML keys are an error (PyYAML silently keeps the last one otherwise).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from gpu_sharing.config.schema import Config
from gpu_sharing.config.sizing_catalog import SizingCatalog
from gpu_sharing.errors import ConfigError

MAX_CONFIG_BYTES = 4 * 1024 * 1024
MAX_YAML_ALIASES = 100
MAX_YAML_NODES = 100_000
"""Nodes of the document with every alias expanded: an alias bomb (9 levels of 9 aliases: 81 aliases,
387 million nodes once expanded by pydantic or a dump) is refused before anything is constructed."""
T = TypeVar("T", bound=BaseModel)


if getattr(yaml, "__with_libyaml__", False):
    class _SafeEvents(yaml.composer.Composer, yaml.cyaml.CParser, yaml.constructor.SafeConstructor,  # type: ignore[misc]
                      yaml.resolver.Resolver):
        """libyaml scans and parses (PyYAML's pure-Python scanner is 5-20x slower: seconds for a large or deeply
        nested flow collection); PyYAML's composer builds the nodes, so ``compose_node`` below still sees every
        alias event. Same constructors and resolver as ``yaml.SafeLoader``."""

        def __init__(self, stream):
            yaml.cyaml.CParser.__init__(self, stream)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)
            yaml.composer.Composer.__init__(self)
else:  # a PyYAML built without libyaml
    _SafeEvents = yaml.SafeLoader  # type: ignore[misc,assignment]


class _StrictLoader(_SafeEvents):
    """SafeLoader that rejects duplicate keys and caps alias expansion."""

    alias_count = 0

    def compose_node(self, parent, index):  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            self.alias_count += 1
            if self.alias_count > MAX_YAML_ALIASES:
                raise yaml.YAMLError(f"too many YAML aliases (more than {MAX_YAML_ALIASES}): "
                                     "refusing a possible alias bomb")
        return super().compose_node(parent, index)

    def get_single_node(self):  # type: ignore[override]
        node = super().get_single_node()
        if node is not None:
            expanded = _expanded_nodes(node, {}, MAX_YAML_NODES)
            if expanded > MAX_YAML_NODES:
                raise yaml.YAMLError(f"the document expands to more than {MAX_YAML_NODES} nodes once its aliases "
                                     "are resolved: refusing a possible alias bomb")
        return node

    def construct_mapping(self, node, deep=False):  # type: ignore[override]
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:
                raise yaml.constructor.ConstructorError(None, None, f"unhashable key {key!r}", key_node.start_mark) from None
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (line {key_node.start_mark.line + 1})", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _expanded_nodes(node: yaml.Node, memo: dict[int, int], cap: int) -> int:
    """Node count with aliases expanded (shared nodes counted each time they are referenced), capped."""
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = cap + 1  # a recursive alias counts as over the budget
    total = 1
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    else:
        children = []
    for child in children:
        total += _expanded_nodes(child, memo, cap)
        if total > cap:
            break
    memo[key] = min(total, cap + 1)
    return memo[key]


def format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and (part.startswith("function-") or part in ("list[...]", "str", "int", "literal['all']", "literal['auto']")):
            continue
        elif "[" in str(part) or "(" in str(part):
            continue  # union branch tags like 'list[int]'
        else:
            out += ("." if out else "") + str(part)
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def validation_problems(err: ValidationError) -> list[tuple[str, str]]:
    problems: dict[str, str] = {}
    for e in err.errors(include_url=False):
        key = format_loc(tuple(e["loc"]))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (not allowed here; check the spelling against `gpu-sharing schema`)"
        elif e["type"] == "missing":
            msg = "required key is missing"
        elif "input" in e and e["type"] not in ("value_error",):
            msg = f"{msg} (got {_short(e['input'])})"
        problems.setdefault(key, msg)  # first message per key: unions repeat themselves
    return list(problems.items())


def read_yaml(path: str | os.PathLike[str]) -> Any:
    p = Path(path)
    try:
        with open(p, "rb") as f:  # bounded: /dev/zero and FIFOs report size 0
            raw = f.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(str(p), [("", f"file is larger than {MAX_CONFIG_BYTES} bytes")])
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(str(p), [("", "file not found")]) from None
    except IsADirectoryError:
        raise ConfigError(str(p), [("", "is a directory, expected a YAML file")]) from None
    except UnicodeDecodeError as e:
        raise ConfigError(str(p), [("", f"not UTF-8 text ({e.reason} at byte {e.start})")]) from None
    except OSError as e:
        raise ConfigError(str(p), [("", f"cannot read: {e.strerror}")]) from None
    return parse_yaml_text(text, str(p))


def parse_yaml_text(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(source, [("", f"invalid YAML: {where}{problem}{_near(text, mark)}")]) from None
    except RecursionError:
        raise ConfigError(source, [("", "invalid YAML: nesting too deep")]) from None


def _near(text: str, mark: Any) -> str:
    """The text at a YAML error (libyaml's messages do not quote the offending character)."""
    if mark is None:
        return ""
    lines = text.splitlines()
    near = lines[mark.line][mark.column:mark.column + 20] if mark.line < len(lines) else ""
    return f" (at {near!r})" if near.strip() else ""


def validate_data(model: type[T], data: Any, source: str) -> T:
    if not isinstance(data, dict):
        raise ConfigError(source, [("", f"expected a mapping at the top level, got {type(data).__name__}")])
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(source, validation_problems(e)) from None
    except RecursionError:
        raise ConfigError(source, [("", "nesting too deep")]) from None


def load_config(path: str | os.PathLike[str]) -> Config:
    """Load the daemon config. Raises ConfigError (exit code 2) with every problem found."""
    return validate_data(Config, read_yaml(path), str(path))


def parse_config_text(text: str, source: str = "<string>") -> Config:
    return validate_data(Config, parse_yaml_text(text, source), source)


def load_sizing_catalog(path: str | os.PathLike[str]) -> SizingCatalog:
    """The seed-format sizing catalog. Its errors never quote its content: the path comes from a config key and
    the error may be shown on the unauthenticated /status (``sizing.catalog: /etc/shadow`` must leak nothing)."""
    try:
        data = read_yaml(path)
        if isinstance(data, list):
            data = {"models": data}
        if data is None:
            data = {}
        return validate_data(SizingCatalog, data, str(path))
    except ConfigError as e:
        raise ConfigError(e.path, [_redact(key, msg) for key, msg in e.problems]) from None


def _redact(key: str, msg: str) -> tuple[str, str]:
    """Drop what came from the file: unknown key names (the last path part), quoted values, echoed inputs."""
    if msg.startswith("unknown key"):
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        return (f"{parent}.<key>" if parent else "<key>"), "unknown key (name not shown: it comes from the file)"
    msg = re.sub(r" \(got .*\)$", "", msg)
    return key, re.sub(r"(['\"]).*?\1", "'...'", msg)


def resolve_relative(config_path: str | os.PathLike[str], value: str) -> Path:
    """Paths in a config are relative to the config file's folder."""
    p = Path(os.path.expanduser(value))
    return p if p.is_absolute() else Path(config_path).resolve().parent / p
