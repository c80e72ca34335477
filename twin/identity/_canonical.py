"""Canonical JSON (RFC 8785, JCS): the exact bytes that signatures are computed over."""

from __future__ import annotations

import json
from typing import Any, cast

import rfc8785

from twin.errors import BadInput

_MAX_INT = 2**53 - 1  # larger whole numbers have no exact IEEE 754 double: JCS refuses them
_PLAIN_DEPTH = 32


def canonical_json(value: object) -> bytes:
    """The RFC 8785 canonical form of a JSON-compatible value; BadInput if it has none."""
    if _plain(value, 0):
        # Without floats and with ASCII keys, JCS is sorted compact JSON with UTF-8 text:
        # the standard library's C encoder writes the same bytes far faster (a test checks).
        try:
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
            return text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: the library below says what is wrong
            pass
    try:
        return rfc8785.dumps(cast(Any, value))
    except rfc8785.CanonicalizationError as error:
        raise BadInput(f"value cannot be written as canonical JSON: {error}") from None
    except RecursionError:
        raise BadInput("value is nested too deeply for canonical JSON") from None


def _plain(value: object, depth: int) -> bool:
    """Whether ``value`` holds only text, whole numbers JCS allows, booleans and nulls, in
    objects with ASCII keys (which sort alike by code point and by UTF-16 unit) and arrays."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return -_MAX_INT <= cast(int, value) <= _MAX_INT
    if depth >= _PLAIN_DEPTH:
        return False
    if kind is dict:
        return all(
            type(k) is str and k.isascii() and _plain(v, depth + 1)
            for k, v in cast(dict[Any, Any], value).items()
        )
    if kind is list:
        return all(_plain(v, depth + 1) for v in cast(list[Any], value))
    return False
