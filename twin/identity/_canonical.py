"""Canonical JSON (RFC 8785, JCS): the exact bytes that signatures are computed over."""

from __future__ import annotations

from typing import Any, cast

import rfc8785

from twin.errors import BadInput


def canonical_json(value: object) -> bytes:
    """The RFC 8785 canonical form of a JSON-compatible value; BadInput if it has none."""
    try:
        return rfc8785.dumps(cast(Any, value))
    except rfc8785.CanonicalizationError as error:
        raise BadInput(f"value cannot be written as canonical JSON: {error}") from None
    except RecursionError:
        raise BadInput("value is nested too deeply for canonical JSON") from None
