"""Encryption at rest: keys derived from the root seed per owner and purpose, and their boxes."""

from twin.vault._box import Box
from twin.vault._keys import Vault, keyed_hash

__all__ = ["Box", "Vault", "keyed_hash"]
