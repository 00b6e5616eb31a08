"""Reading YAML safely, keeping the line of every value.

Experiment files are shared and downloaded, so they are untrusted input: only the
safe loader's plain types are accepted, no Python tags, and the size of what a
file may expand to is bounded before anything is built (alias bombs, deep nesting,
huge files). Every value's line is recorded so errors can point at it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cnnzoo.errors import ConfigError

MAX_BYTES = 1 << 20  # 1 MiB: far above any real experiment file
MAX_ALIASES = 100
MAX_DEPTH = 50
MAX_NODES = 10_000  # values written in the file; the largest bundled config has 241
MAX_VALUES = 100_000  # after alias expansion; stops a bomb made of few aliases

# The structure is checked with libyaml's parser where PyYAML has it: it reads a
# megabyte in a fraction of a second, where the pure-Python parser takes many.
_SCAN_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_SCALAR_TAGS = {
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:str",
}
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_PLAIN = "configs hold plain values only (numbers, strings, booleans, lists, mappings)"

Path_ = tuple[str | int, ...]


@dataclass
class YamlDocument:
    """Plain Python data (dicts, lists, scalars) and the line of each value by key path."""

    data: Any
    source: str
    lines: dict[Path_, int] = field(default_factory=dict)


def read_config_text(path: str | Path) -> str:
    """The text of a config file, refusing files too large to be a config."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ConfigError(f"no such file: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    if path.is_dir():
        raise ConfigError(f"{path} is a directory, not a config file")
    if size > MAX_BYTES:
        raise ConfigError(
            f"file is {size:,} bytes, over the {MAX_BYTES:,}-byte limit for a config",
            source=str(path),
        )
    try:
        # At most one byte past the limit: a pipe or a device (/dev/zero) has no size
        # to check beforehand and may never end.
        with open(path, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > MAX_BYTES:
        raise ConfigError(
            f"file is over the {MAX_BYTES:,}-byte limit for a config", source=str(path)
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("not a UTF-8 text file", source=str(path)) from None


def load_yaml(text: str, source: str = "<string>") -> YamlDocument:
    """Parse `text` into plain data with line numbers, within the limits above."""
    if len(text.encode("utf-8", errors="replace")) > MAX_BYTES:
        raise ConfigError(f"text is over the {MAX_BYTES:,}-byte limit for a config", source=source)
    try:
        _check_structure(text, source)
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            doc = YamlDocument(data=None, source=source)
            if node is not None:
                doc.data = _Converter(loader, source, doc.lines).convert(node, ())
        finally:
            loader.dispose()
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        raise ConfigError(
            f"invalid YAML: the character #x{_code(exc.character):04x} is not allowed in YAML text",
            source=source, line=line, fix="remove it (control characters cannot appear)",
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        fix = "indent with spaces, not tabs" if "\\t" in problem or "tab" in problem else None
        raise ConfigError(
            f"invalid YAML: {problem}",
            source=source,
            line=mark.line + 1 if mark else None,
            fix=fix,
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", source=source) from None
    return doc


def _check_structure(text: str, source: str) -> None:
    """Count values, aliases and nesting from the event stream, before anything is built."""
    try:
        _scan(text, source, _SCAN_LOADER)
    except (yaml.YAMLError, UnicodeError):
        # Scan again with the loader's own parser, so that the error is reported the
        # same way with or without libyaml; it stops at the same place, or at a limit.
        _scan(text, source, yaml.SafeLoader)


def _scan(text: str, source: str, loader: type) -> None:
    aliases = depth = nodes = 0
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, yaml.NodeEvent):
            nodes += 1
            if nodes > MAX_NODES:
                raise ConfigError(
                    f"more than {MAX_NODES:,} values; refused as too large for a config",
                    source=source,
                    line=event.start_mark.line + 1,
                )
        if isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_ALIASES:
                raise ConfigError(
                    f"more than {MAX_ALIASES} aliases (*name); refused as a possible alias bomb",
                    source=source,
                    line=event.start_mark.line + 1,
                )
        elif isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise ConfigError(
                    f"nesting deeper than {MAX_DEPTH} levels",
                    source=source,
                    line=event.start_mark.line + 1,
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


class _Converter:
    """Nodes to plain data, refusing anything but the safe scalar types."""

    def __init__(self, loader: yaml.SafeLoader, source: str, lines: dict[Path_, int]) -> None:
        self.loader = loader
        self.source = source
        self.lines = lines
        self.count = 0
        self.open: set[int] = set()  # ids of the collections being converted, root to here

    def error(self, what: str, node: yaml.Node, fix: str | None = None) -> ConfigError:
        what = what.replace("tag:yaml.org,2002:", "!!")
        return ConfigError(what, source=self.source, line=node.start_mark.line + 1, fix=fix)

    def convert(self, node: yaml.Node, path: Path_) -> Any:
        self.count += 1
        if self.count > MAX_VALUES:
            raise self.error(
                f"the document expands to more than {MAX_VALUES:,} values; "
                "refused as a possible alias bomb",
                node,
            )
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.ScalarNode):
            if node.tag not in _SCALAR_TAGS:
                raise self.error(
                    f"the tag {node.tag} is not allowed",
                    node,
                    _PLAIN,
                )
            return self.scalar(node)
        if not isinstance(node, (yaml.SequenceNode, yaml.MappingNode)):
            raise self.error(f"unsupported YAML node {type(node).__name__}", node)
        if id(node) in self.open:
            raise self.error("an alias (*name) inside the collection its anchor names; "
                             "refused, it would never end", node)
        self.open.add(id(node))
        try:
            return self.convert_collection(node, path)
        finally:
            self.open.discard(id(node))

    def scalar(self, node: yaml.ScalarNode) -> Any:
        """A scalar value or mapping key as YAML reads it."""
        try:
            return self.loader.construct_object(node, deep=True)
        except ValueError:  # Python refuses to convert integers of over 4300 digits
            raise self.error(
                f"the value {node.value[:20]}... ({len(node.value):,} characters) cannot "
                "be read as a number",
                node,
            ) from None

    def convert_collection(self, node: yaml.CollectionNode, path: Path_) -> Any:
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ_TAG:
                raise self.error(f"the tag {node.tag} is not allowed", node, _PLAIN)
            return [self.convert(item, (*path, i)) for i, item in enumerate(node.value)]
        if node.tag != _MAP_TAG:
            raise self.error(f"the tag {node.tag} is not allowed", node, _PLAIN)
        return self.convert_mapping(node, path)

    def convert_mapping(self, node: yaml.MappingNode, path: Path_) -> dict[str, Any]:
        result: dict[str, Any] = {}
        merged: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                # `<<: *defaults` merges; keys written out in this mapping win.
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [
                    value_node
                ]
                for source in sources:
                    value = self.convert(source, path)
                    if not isinstance(value, dict):
                        raise self.error("'<<' merges mappings only", value_node)
                    for k, v in value.items():
                        merged.setdefault(k, v)
                continue
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag not in _SCALAR_TAGS:
                raise self.error("mapping keys must be plain names", key_node)
            key = self.scalar(key_node)
            if not isinstance(key, str):
                raise self.error(
                    f"mapping keys must be names, got {key!r}",
                    key_node,
                    "quote the key if it is meant as a name",
                )
            if key in result:
                raise self.error(f"duplicate key '{key}'", key_node, "keep only one of them")
            # An error about a key points at the key's line, even when its value
            # (a nested mapping or list) starts on the next one.
            self.lines.setdefault((*path, key), key_node.start_mark.line + 1)
            result[key] = self.convert(value_node, (*path, key))
        for k, v in merged.items():
            result.setdefault(k, v)
        return result


def dump_yaml(data: Any) -> str:
    """Block-style YAML with lists of layers on one line each, keys in the given order."""

    class _Dumper(yaml.SafeDumper):
        pass

    def represent_dict(dumper: yaml.SafeDumper, value: dict) -> yaml.Node:
        flow = len(value) > 0 and all(_scalar_or_short_list(v) for v in value.values())
        return dumper.represent_mapping(_MAP_TAG, value.items(), flow_style=flow)

    def represent_list(dumper: yaml.SafeDumper, value: list) -> yaml.Node:
        flow = all(isinstance(v, (int, float, str)) for v in value) and len(value) <= 4
        return dumper.represent_sequence(_SEQ_TAG, value, flow_style=flow)

    _Dumper.add_representer(dict, represent_dict)
    _Dumper.add_representer(list, represent_list)
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=120, allow_unicode=True)


def _scalar_or_short_list(value: Any) -> bool:
    if isinstance(value, list):
        return all(isinstance(v, (int, float, str, bool)) for v in value) and len(value) <= 4
    return not isinstance(value, dict)


def _code(character: int | str | bytes) -> int:
    if isinstance(character, int):
        return character
    return ord(character[:1]) if character else 0
