"""Load YAML that may be hostile: bounded in size, in alias expansion and in what an error quotes.

crossnet runs as root and reads kind configs and profiles a user (or a pull request) wrote, so
a file must not be able to make it use gigabytes of memory or print megabytes of error:

- ``read_text`` reads at most ``MAX_TEXT_BYTES`` and insists on UTF-8;
- ``load`` composes the document with ``yaml.SafeLoader``, measures the size the node graph
  has once every alias (``*name``) is expanded, and refuses a "billion laughs" document before
  constructing any Python object from it;
- ``cut`` quotes any value for an error message, cut to a readable length without ever
  building the full ``repr`` of a large value.
"""

from __future__ import annotations

import reprlib
from pathlib import Path
from typing import Any

import yaml

__all__ = ["MAX_EXPANDED_CHARS", "MAX_NODES", "MAX_TEXT_BYTES", "UnsafeYAMLError", "clip", "cut", "load", "read_text"]

MAX_TEXT_BYTES = 1024 * 1024  # a kind config or a profile is a few KiB
MAX_NODES = 10_000  # YAML nodes as parsed and once aliases are expanded (the shipped files have a few hundred)
MAX_EXPANDED_CHARS = MAX_TEXT_BYTES  # scalar characters once aliases are expanded
MAX_DEPTH = 100  # nesting levels (the shipped files have under 10)

ALIAS_FIX = "remove the YAML aliases (&/*) and write the values out"


class UnsafeYAMLError(yaml.YAMLError):
    """A document refused before (or instead of) being constructed; names the source and the fix."""

    problem_mark = None  # like yaml.MarkedYAMLError, for callers that look for a line

    def __init__(self, source: str, problem: str, fix: str) -> None:
        self.source = source
        self.problem = problem
        self.fix = fix
        super().__init__(f"{source}: {problem}")


def cut(value: object, limit: int = 80) -> str:
    """``repr(value)`` for an error message, at most about `limit` characters.

    Never builds the whole repr of a large value: strings are sliced first, containers are
    shown through ``reprlib`` (a few items, a few levels)."""
    limit = max(limit, 16)
    if isinstance(value, str):
        text = repr(value[: limit + 1])
        if len(value) <= limit and len(text) <= limit + 2:
            return text
        keep = limit
        while keep > 0 and len(repr(value[:keep])) > limit:
            keep = keep * 3 // 4
        shown = repr(value[:keep])
        return f"{shown[:-1]}…{shown[-1]} ({len(value)} chars)"
    shower = reprlib.Repr()
    shower.maxlevel, shower.maxlist, shower.maxtuple, shower.maxdict = 2, 4, 4, 4
    shower.maxset = shower.maxfrozenset = shower.maxdeque = shower.maxarray = 4
    shower.maxstring = shower.maxother = max(limit // 2, 8)
    shower.maxlong = limit
    text = shower.repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def clip(text: str, limit: int = 200) -> str:
    """Plain `text` (an error's own message) cut to at most `limit` characters."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def read_text(path: Path, what: str = "file") -> str:
    """The text of `path`: at most MAX_TEXT_BYTES, UTF-8. OSError propagates (the caller knows
    which fix to suggest); an oversized or non-UTF-8 file raises UnsafeYAMLError."""
    with path.open("rb") as handle:
        data = handle.read(MAX_TEXT_BYTES + 1)
    if len(data) > MAX_TEXT_BYTES:
        raise UnsafeYAMLError(
            str(path),
            f"is larger than {MAX_TEXT_BYTES // 1024} KiB, far larger than any {what}",
            f"pass the right {what}; a {what} is a few KiB of YAML",
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnsafeYAMLError(
            str(path),
            f"is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})",
            f"pass a {what} written as UTF-8 YAML text",
        ) from None


class _Refused(Exception):
    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.problem, self.fix = problem, fix


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that stops composing past `max_nodes` nodes or MAX_DEPTH levels, so a large
    or deep document costs at most that much parsing (PyYAML parses ~20k nodes a second)."""

    def __init__(self, text: str, max_nodes: int) -> None:
        super().__init__(text)
        self.max_nodes = max_nodes
        self.composed = 0
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self.composed += 1
        if self.composed > self.max_nodes:
            raise _Refused(
                f"has more than {self.max_nodes} YAML nodes, far more than any crossnet file",
                "pass the right file; crossnet's YAML files are a few hundred nodes",
            )
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise _Refused(
                    f"is nested more than {MAX_DEPTH} levels deep",
                    "flatten the document; kind configs and profiles are a few levels deep",
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _expanded_size(root: yaml.Node, max_nodes: int, max_chars: int) -> tuple[int, int] | None:
    """(nodes, scalar characters) of the graph under `root` with every alias expanded, or None
    once over budget or cyclic. Aliases are the same node object reached twice, so each node
    is measured once (memoized by id) and iteratively (no recursion limit to hit)."""
    sizes: dict[int, tuple[int, int]] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            nodes, chars = 1, 0
            for child in _children(node):
                child_nodes, child_chars = sizes[id(child)]
                nodes += child_nodes
                chars += child_chars
            if nodes > max_nodes or chars > max_chars:
                return None
            sizes[key] = (nodes, chars)
            open_nodes.discard(key)
            continue
        if key in sizes:
            continue
        if isinstance(node, yaml.ScalarNode):
            sizes[key] = (1, len(node.value))
            if len(node.value) > max_chars:
                return None
            continue
        if key in open_nodes:
            return None  # an alias inside its own anchor: infinite expansion
        open_nodes.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in open_nodes:
                return None
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _has_alias(root: yaml.Node) -> bool:
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            return True
        seen.add(id(node))
        stack.extend(_children(node))
    return False


def _too_deep(source: str) -> UnsafeYAMLError:
    return UnsafeYAMLError(
        source, "is nested too deeply to read", "flatten the document; kind configs and profiles are a few levels deep"
    )


def load(text: str, source: str, max_nodes: int = MAX_NODES) -> Any:
    """``yaml.safe_load(text)``, refusing hostile documents with UnsafeYAMLError (a YAMLError).

    Refused: more than MAX_TEXT_BYTES of text, more than `max_nodes` nodes (counted while parsing,
    so a large document is not parsed to its end), more than MAX_DEPTH levels of nesting, more
    than `max_nodes` nodes or MAX_EXPANDED_CHARS scalar characters once aliases are expanded,
    aliases that contain themselves, and values Python refuses to build (a 5000-digit integer, 2024-13-45).
    Malformed YAML raises the usual yaml.YAMLError (whose message quotes at most a line)."""
    if len(text) > MAX_TEXT_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_TEXT_BYTES:
        raise UnsafeYAMLError(
            source,
            f"is larger than {MAX_TEXT_BYTES // 1024} KiB of YAML",
            "pass the right file; crossnet's YAML files are a few KiB",
        )
    loader = _BoundedLoader(text, max_nodes)
    try:
        try:
            node = loader.get_single_node()
        except _Refused as exc:
            raise UnsafeYAMLError(source, exc.problem, exc.fix) from None
        except RecursionError:
            raise _too_deep(source) from None
        if node is None:
            return None
        if _expanded_size(node, max_nodes, MAX_EXPANDED_CHARS) is None:
            if _has_alias(node):
                raise UnsafeYAMLError(
                    source,
                    f"its YAML aliases expand to more than {max_nodes} nodes or "
                    f"{MAX_EXPANDED_CHARS // 1024} KiB of text, or refer to themselves (a 'billion laughs' document)",
                    ALIAS_FIX,
                )
            raise UnsafeYAMLError(
                source,
                f"holds more than {MAX_EXPANDED_CHARS // 1024} KiB of values",
                "pass the right file; crossnet's YAML files are a few KiB",
            )
        try:
            return loader.construct_document(node)
        except RecursionError:
            raise _too_deep(source) from None
        except (ValueError, OverflowError) as exc:
            raise UnsafeYAMLError(
                source,
                f"holds a value Python cannot build: {clip(str(exc), 120)}",
                "quote the value if it is meant as text",
            ) from None
    finally:
        loader.dispose()
