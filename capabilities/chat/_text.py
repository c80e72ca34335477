"""What chat accepts as text (messages, group names, emoji, file names) and the words a
message is found by."""

from __future__ import annotations

import re
import unicodedata

from twin import BadInput

MAX_TEXT = 4000  # characters (code points) in one message
MAX_GROUP_NAME = 80
MAX_EMOJI = 16
MAX_FILE_NAME = 200
# Bidirectional embeddings, overrides and isolates: in a name they can make "gpj.exe" read as
# "exe.jpg". Messages keep them (a right-to-left writer may need them) and are shown isolated.
_BIDI_CONTROLS = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# What shows nothing on its own: a message of only these is as empty as one with no text
_INVISIBLE = {"Cc", "Cf", "Zs", "Zl", "Zp"}
_WORD = re.compile(r"\w+")
PREFIX = 3  # a word is found by its first three characters, then checked whole


# C0 and C1 control characters; messages may hold tabs (U+0009) and line breaks (U+000A)
_ANY_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_LINES = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _controls(text: str, lines: bool) -> bool:
    return (_CONTROL_BUT_LINES if lines else _ANY_CONTROL).search(text) is not None


def check_text(value: object, *, empty: bool = False) -> str:
    """A message's text: at most MAX_TEXT characters, no control characters but line breaks
    and tabs; empty only where attachments carry the message."""
    if not isinstance(value, str):
        raise BadInput("a message's text must be a string")
    text = value.strip()
    if len(text) > MAX_TEXT:
        raise BadInput(
            f"a message is at most {MAX_TEXT} characters; this one is {len(text)}: "
            "split it, or send the text as a file"
        )
    if not empty and all(unicodedata.category(c) in _INVISIBLE for c in text):
        raise BadInput("a message needs some text (or an attachment)")
    if _controls(text, lines=True):
        raise BadInput("a message must not contain control characters")
    return text


def check_name(value: object, what: str = "a group's name", limit: int = MAX_GROUP_NAME) -> str:
    """A name shown in lists: one line of visible text, no direction overrides."""
    if not isinstance(value, str):
        raise BadInput(f"{what} must be text")
    name = value.strip()
    if not name:
        raise BadInput(f"{what} must not be empty")
    if len(name) > limit:
        raise BadInput(f"{what} is at most {limit} characters; this one is {len(name)}")
    if _controls(name, lines=False):
        raise BadInput(f"{what} must be one line without control characters")
    if any(c in _BIDI_CONTROLS for c in name):
        raise BadInput(
            f"{what} must not contain direction overrides (U+202A–U+202E, U+2066–U+2069)"
        )
    if all(unicodedata.category(c) in ("Cf", "Zs", "Mn") for c in name):
        raise BadInput(f"{what} needs at least one visible character")
    return name


def check_emoji(value: object) -> str:
    """A reaction: a short run of non-letter symbols (one emoji, maybe joined or modified)."""
    if not isinstance(value, str) or not value or len(value) > MAX_EMOJI:
        raise BadInput(f"a reaction is one emoji (at most {MAX_EMOJI} code points)")
    kinds = [unicodedata.category(c)[0] for c in value]
    if (
        _controls(value, lines=False)
        or any(k in "LNZ" for k in kinds)
        or not any(k in "SP" for k in kinds)
    ):
        raise BadInput("a reaction is an emoji, not letters, digits, spaces or invisible marks")
    return value


def check_file_name(value: object) -> str:
    name = check_name(value, "a file's name", MAX_FILE_NAME)
    if "/" in name or "\\" in name or name in (".", ".."):
        raise BadInput("a file's name must not contain slashes or be . or ..")
    return name


def words(text: str) -> list[str]:
    """The words of ``text`` as a search compares them (case and width folded)."""
    return _WORD.findall(unicodedata.normalize("NFKC", text).casefold())


def prefixes(text: str) -> set[str]:
    """What the search index keeps for ``text``: the first characters of each word."""
    return {word[:PREFIX] for word in words(text)}


def matches(text: str, query: list[str], long: list[str]) -> bool:
    """Whether every query word begins a word of ``text`` (when the query has no ``long``
    word, of PREFIX characters or more, its short words must be whole words)."""
    found = words(text)
    if not long:
        return all(q in found for q in query)
    return all(any(word.startswith(q) for word in found) for q in query)
