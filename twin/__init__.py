"""twin: a self-hosted digital twin. This module is the surface plugin authors import.

A capability plugin subclasses :class:`Capability`, declares its endpoints with
``twin.api.get/put/post/patch/delete`` and its tables with :class:`Migration`.
"""

from twin import api
from twin.__about__ import __version__
from twin.api import Call, Endpoint
from twin.capability import Capability, Context, Holding
from twin.db import Migration
from twin.errors import (
    BadInput,
    Conflict,
    Forbidden,
    Gone,
    InUse,
    Invalid,
    InvalidSignature,
    NotFound,
    PluginError,
    PreconditionFailed,
    QuotaExceeded,
    RateLimited,
    TooLarge,
    TwinError,
    Unauthorized,
    Unavailable,
    UnsupportedMedia,
    VaultLocked,
    WrongPassphrase,
)
from twin.manifest import Manifest, Permission
from twin.peers import Message, MessageType

__all__ = [
    "BadInput",
    "Call",
    "Capability",
    "Conflict",
    "Context",
    "Endpoint",
    "Forbidden",
    "Gone",
    "Holding",
    "InUse",
    "Invalid",
    "InvalidSignature",
    "Manifest",
    "Message",
    "MessageType",
    "Migration",
    "NotFound",
    "Permission",
    "PluginError",
    "PreconditionFailed",
    "QuotaExceeded",
    "RateLimited",
    "TooLarge",
    "TwinError",
    "Unauthorized",
    "Unavailable",
    "UnsupportedMedia",
    "VaultLocked",
    "WrongPassphrase",
    "__version__",
    "api",
]
