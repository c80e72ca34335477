"""WebDAV's XML: request bodies parsed safely (no DOCTYPE, no entities, bounded), and the
multistatus, property and error documents written as text."""

from __future__ import annotations

import functools
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.utils import formatdate
from urllib.parse import quote

from twin import BadInput

DAV = "{DAV:}"
MAX_BODY = 1 << 20  # a PROPFIND, PROPPATCH or LOCK body; file contents go through PUT, unbounded
XML_HEADER = b'<?xml version="1.0" encoding="utf-8"?>\n'
# A DOCTYPE is the only way to declare entities; refusing it refuses "billion laughs" too.
_DOCTYPE = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"})

# The properties the twin computes; a PROPPATCH may not change them.
LIVE = (
    "creationdate",
    "displayname",
    "getcontentlength",
    "getcontenttype",
    "getetag",
    "getlastmodified",
    "lockdiscovery",
    "resourcetype",
    "supportedlock",
)
# ownCloud's digests of a file's content ("SHA1:… MD5:…"): what rclone's owncloud mode compares.
OC_CHECKSUMS = "{http://owncloud.org/ns}checksums"
LIVE_NAMES = frozenset({*(DAV + name for name in LIVE), OC_CHECKSUMS})
REASONS = {
    200: "OK",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    423: "Locked",
    424: "Failed Dependency",
    507: "Insufficient Storage",
}


def escape(text: str) -> str:
    return text.translate(_ESCAPES)


def parse(body: bytes) -> ET.Element | None:
    """A request body's root element (None for an empty body); BadInput for XML the twin
    refuses: a DOCTYPE or entity declaration, or anything not well formed."""
    if not body.strip():
        return None
    if _DOCTYPE.search(body):
        raise BadInput("XML with a DOCTYPE or entity declarations is refused")
    try:
        return ET.fromstring(body)
    except ET.ParseError as exc:
        raise BadInput(f"the request body is not well-formed XML: {exc}") from None


def clark(tag: str) -> str:
    """A property's name as the store keys it: "{namespace}local" ("{}local" without one)."""
    return tag if tag.startswith("{") else "{}" + tag


def split_clark(name: str) -> tuple[str, str]:
    namespace, _, local = name[1:].partition("}")
    return namespace, local


def empty_element(name: str) -> str:
    """``<local xmlns="namespace"/>`` for a property name (DAV: ones with the D: prefix)."""
    namespace, local = split_clark(name)
    if namespace == "DAV:":
        return f"<D:{local}/>"
    return f'<{local} xmlns="{escape(namespace)}"/>'


def serialize(element: ET.Element) -> bytes:
    """A property element as stored: standalone XML declaring the namespaces it uses."""
    element.tail = None
    return ET.tostring(element, encoding="unicode").encode()


def href(path: str, folder: bool) -> str:
    """The URL path of a store path under /dav/: each segment percent-encoded, folders end in /."""
    if not path:
        return "/dav/"
    return "/dav/" + quote(path, safe="/") + ("/" if folder else "")


@functools.lru_cache(maxsize=4096)
def _http_date(seconds: int) -> str:
    return formatdate(seconds, usegmt=True)


def http_date(seconds: float) -> str:
    """RFC 1123 (``Last-Modified``, ``getlastmodified``); a listing repeats the same seconds."""
    return _http_date(int(seconds))


def rfc3339(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


@dataclass
class PropfindRequest:
    """What a PROPFIND asked for: every property (``allprop``), names only, or these."""

    mode: str  # "allprop" | "propname" | "prop"
    names: list[str] = field(default_factory=list)


def propfind_request(root: ET.Element | None) -> PropfindRequest:
    if root is None:
        return PropfindRequest("allprop")
    if root.tag != DAV + "propfind":
        raise BadInput("a PROPFIND body must be a DAV:propfind element")
    for child in root:
        if child.tag == DAV + "allprop":
            return PropfindRequest("allprop")
        if child.tag == DAV + "propname":
            return PropfindRequest("propname")
        if child.tag == DAV + "prop":
            return PropfindRequest("prop", [clark(p.tag) for p in child])
    raise BadInput("a DAV:propfind holds one of DAV:allprop, DAV:propname or DAV:prop")


def proppatch_request(root: ET.Element | None) -> list[tuple[str, str, ET.Element]]:
    """The updates in document order: ("set" | "remove", property name, its element)."""
    if root is None or root.tag != DAV + "propertyupdate":
        raise BadInput("a PROPPATCH body must be a DAV:propertyupdate element")
    updates = []
    for action in root:
        if action.tag not in (DAV + "set", DAV + "remove"):
            continue
        kind = action.tag[len(DAV) :]
        for prop in action:
            if prop.tag != DAV + "prop":
                continue
            updates += [(kind, clark(element.tag), element) for element in prop]
    if not updates:
        raise BadInput("the DAV:propertyupdate sets or removes no property")
    return updates


@dataclass(frozen=True)
class LockRequest:
    exclusive: bool
    owner: str  # the DAV:owner element's content, as XML text


def lock_request(root: ET.Element) -> LockRequest:
    if root.tag != DAV + "lockinfo":
        raise BadInput("a LOCK body must be a DAV:lockinfo element")
    scope = root.find(DAV + "lockscope")
    if scope is None or len(scope) != 1 or scope[0].tag not in (DAV + "exclusive", DAV + "shared"):
        raise BadInput("a DAV:lockinfo needs a DAV:lockscope of DAV:exclusive or DAV:shared")
    kind = root.find(DAV + "locktype")
    if kind is None or kind.find(DAV + "write") is None:
        raise BadInput("only DAV:write locks exist")
    owner = root.find(DAV + "owner")
    text = ""
    if owner is not None:
        text = escape(owner.text or "") + "".join(serialize_keep_tail(c) for c in owner)
    return LockRequest(scope[0].tag == DAV + "exclusive", text)


def serialize_keep_tail(element: ET.Element) -> str:
    return ET.tostring(element, encoding="unicode")


def response(href_: str, propstats: Iterable[tuple[int, str]]) -> str:
    """One DAV:response: ``propstats`` pairs a status with the properties' XML."""
    parts = [f"<D:response><D:href>{href_}</D:href>"]
    for status, props in propstats:
        parts.append(
            f"<D:propstat><D:prop>{props}</D:prop>"
            f"<D:status>HTTP/1.1 {status} {REASONS.get(status, '')}</D:status></D:propstat>"
        )
    parts.append("</D:response>")
    return "".join(parts)


def status_response(href_: str, status: int) -> str:
    return (
        f"<D:response><D:href>{href_}</D:href>"
        f"<D:status>HTTP/1.1 {status} {REASONS.get(status, '')}</D:status></D:response>"
    )


MULTISTATUS_OPEN = XML_HEADER + b'<D:multistatus xmlns:D="DAV:">'
MULTISTATUS_CLOSE = b"</D:multistatus>\n"


def error(condition: str, hrefs: Iterable[str] = ()) -> bytes:
    """A DAV:error body naming the precondition that failed (``lock-token-submitted``...)."""
    inner = "".join(f"<D:href>{h}</D:href>" for h in hrefs)
    body = f"<D:{condition}>{inner}</D:{condition}>" if inner else f"<D:{condition}/>"
    return XML_HEADER + f'<D:error xmlns:D="DAV:">{body}</D:error>\n'.encode()
