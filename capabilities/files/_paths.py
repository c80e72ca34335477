"""What a file or folder path may be: checked once, where it enters the store."""

from __future__ import annotations

import re

from twin import BadInput

MAX_NAME = 255  # bytes of UTF-8, as most file systems allow
MAX_PATH = 4096
MAX_DEPTH = 64
_REFUSED = re.compile(r"[\x00-\x1f\x7f/\\]")


def check_name(name: str) -> str:
    """One segment of a path: a file or folder name."""
    if name in ("", ".", ".."):
        raise BadInput(f"{name!r} is not a file name" if name else "a file name cannot be empty")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise BadInput(f"a name must be valid UTF-8: {name[:80]!r}") from None
    if size > MAX_NAME:
        raise BadInput(f"a name is at most {MAX_NAME} bytes of UTF-8; this one is {size}")
    refused = _REFUSED.search(name)
    if refused is not None:
        what = {"/": "'/'", "\\": "a backslash"}.get(refused.group(), "control characters")
        raise BadInput(f"a name cannot hold {what}: {name[:80]!r}")
    return name


def check_path(text: str) -> str:
    """A path inside the twin's files, as the store keys it: "a/b" ("" is the root).

    A trailing "/" is allowed and dropped ("/" alone is the root); a leading one (an absolute
    path), "..", ".", empty segments, control characters and over-long names are refused.
    """
    if not isinstance(text, str):
        raise BadInput("a path must be a string")
    if len(text) > MAX_PATH:
        raise BadInput(f"a path is at most {MAX_PATH} characters")
    if text.startswith("//") or text.endswith("//"):
        raise BadInput(f"a path cannot hold empty segments ('//'): {text[:80]!r}")
    if text.startswith("/") and text != "/":
        raise BadInput(
            f"a path starts inside your files, without a leading '/': {text[1:81]!r}, "
            f"not {text[:80]!r}"
        )
    path = text.removesuffix("/")
    if not path:
        return ""
    parts = path.split("/")
    if len(parts) > MAX_DEPTH:
        raise BadInput(f"a path has at most {MAX_DEPTH} segments")
    for part in parts:
        if part == "":
            raise BadInput(f"a path cannot hold empty segments ('//'): {text[:80]!r}")
        check_name(part)
    return path


def split(path: str) -> tuple[str, str]:
    """A checked path's parent and name: "a/b/c" -> ("a/b", "c")."""
    parent, _, name = path.rpartition("/")
    return parent, name


def join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name
