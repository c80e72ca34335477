"""Base58btc (the bitcoin alphabet) encoding and decoding of byte strings."""

from __future__ import annotations

from twin.errors import BadInput

_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_DIGIT = {char: value for value, char in enumerate(_ALPHABET)}


def b58encode(data: bytes) -> str:
    """Encode bytes as base58btc; each leading zero byte becomes a leading "1"."""
    zeros = len(data) - len(data.lstrip(b"\0"))
    number = int.from_bytes(data, "big")
    digits: list[str] = []
    while number:
        number, digit = divmod(number, 58)
        digits.append(_ALPHABET[digit])
    return "1" * zeros + "".join(reversed(digits))


def b58decode(text: str) -> bytes:
    """Decode base58btc text; raises BadInput on a character outside the alphabet."""
    number = 0
    for position, char in enumerate(text):
        digit = _DIGIT.get(char)
        if digit is None:
            raise BadInput(f"invalid base58 character {char!r} at position {position}")
        number = number * 58 + digit
    zeros = len(text) - len(text.lstrip("1"))
    return b"\0" * zeros + number.to_bytes((number.bit_length() + 7) // 8, "big")
