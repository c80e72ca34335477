"""What storage accepts as a namespace, a key, a prefix and a document body, with the limits."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from twin import BadInput, TooLarge
from twin.manifest import ID_PATTERN

MAX_KEY = 512  # bytes of UTF-8
MAX_SEGMENTS = 32
MAX_DOCUMENT = 1024 * 1024
MAX_DEPTH = 32

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")  # Unicode's control characters (Cc)
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPENERS = frozenset(b"[{")


def check_namespace(name: str) -> str:
    if not ID_PATTERN.fullmatch(name):
        raise BadInput(
            f"namespace {name[:60]!r} must be a-z, 0-9 and _, start with a letter and be at "
            "most 40 characters (like an experience id)"
        )
    return name


def check_key(key: str) -> str:
    """A key: path-like segments, nothing that could mean another key or confuse a client."""
    if not key:
        raise BadInput("give a key after docs/, like notes/2026/todo")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise BadInput("the key is not valid UTF-8") from None
    if size > MAX_KEY:
        raise BadInput(f"the key is {size} bytes long; the limit is {MAX_KEY} bytes")
    if _CONTROL.search(key):
        raise BadInput("the key holds a control character (NUL, a newline, ...): remove it")
    if "\\" in key:
        raise BadInput("the key holds a backslash: separate folders with /")
    segments = key.split("/")
    if "" in segments:
        raise BadInput(
            f"the key {key[:80]!r} has an empty segment: no //, and no / at the start or end"
        )
    if "." in segments or ".." in segments:
        raise BadInput(f"the key {key[:80]!r} has a . or .. segment: name folders plainly")
    if len(segments) > MAX_SEGMENTS:
        raise BadInput(f"the key has {len(segments)} segments; the limit is {MAX_SEGMENTS}")
    return key


def check_prefix(prefix: str) -> str:
    """A listing's prefix: empty (everything) or a folder ending in ``/``."""
    if prefix and not prefix.endswith("/"):
        raise BadInput(f"prefix {prefix[:80]!r} must be a folder ending in /, like notes/")
    if prefix:
        check_key(prefix[:-1])
    return prefix


def folders(key: str) -> list[str]:
    """The folders a key is listed under: ``a/b/c`` is in ``""``, ``a/`` and ``a/b/``."""
    segments = key.split("/")[:-1]
    return [""] + ["/".join(segments[: i + 1]) + "/" for i in range(len(segments))]


def depth_over(raw: bytes, limit: int = MAX_DEPTH) -> int:
    """How deep the JSON in ``raw`` nests arrays and objects, if deeper than ``limit`` (else 0).

    Cheap for ordinary documents: it only scans when there are more brackets than ``limit``.
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return 0
    depth = 0
    for byte in _STRINGS.sub(b"", raw).translate(None, _NOT_BRACKETS):
        depth = depth + 1 if byte in _OPENERS else depth - 1
        if depth > limit:
            return depth
    return 0


def check_body(raw: bytes, what: str = "the document") -> None:
    """``raw`` must be one JSON object within the size and nesting limits."""
    if len(raw) > MAX_DOCUMENT:
        raise TooLarge(f"{what} is {len(raw)} bytes; the limit is {MAX_DOCUMENT} bytes")
    if depth_over(raw):
        raise BadInput(f"{what} nests deeper than {MAX_DEPTH} levels of objects and arrays")
    try:
        value: Any = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise BadInput(f"{what} is not valid JSON: {exc}") from None
    except UnicodeDecodeError:
        raise BadInput(f"{what} is not valid JSON: a string in it is not UTF-8") from None
    except RecursionError:  # pragma: no cover - depth_over refuses these first
        raise BadInput(f"{what} nests too deeply") from None
    if not isinstance(value, dict):
        kind = "an array" if isinstance(value, list) else f"a {type(value).__name__}"
        raise BadInput(f"{what} must be a JSON object ({{...}}), not {kind}")


def encode_body(value: Any, what: str = "the document") -> bytes:
    """A Python value (a dict) as the JSON bytes stored for it, checked like an HTTP body."""
    if not isinstance(value, dict):
        raise BadInput(f"{what} must be a dict (a JSON object), not {type(value).__name__}")
    try:
        raw = msgspec.json.encode(value)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise BadInput(f"{what} cannot be stored as JSON: {exc}") from None
    check_body(raw, what)
    return raw
