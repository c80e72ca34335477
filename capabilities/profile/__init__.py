"""The ``profile`` capability: the owner's public name, bio and avatar, encrypted at rest."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from starlette.responses import Response

from twin import BadInput, Call, Capability, Conflict, Endpoint, Migration, NotFound, api
from twin.export import seconds

if TYPE_CHECKING:
    from twin.export import Export, Part

MAX_AVATAR = 512 * 1024
_AVATAR_TYPES = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),
}
_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/gif": "gif", "image/webp": "webp"}
PUBLIC = ("display_name", "bio", "avatar")  # what /.well-known/twin and /avatar show anyone
MAX_DISPLAY_NAME = 64
MAX_BIO = 1000


class Profile(msgspec.Struct):
    display_name: str
    bio: str
    avatar: str | None
    updated: float | None


class ProfileUpdate(msgspec.Struct, forbid_unknown_fields=True):
    display_name: Annotated[str, msgspec.Meta(max_length=MAX_DISPLAY_NAME)]
    bio: Annotated[str, msgspec.Meta(max_length=MAX_BIO)] = ""


def _clean(text: str, what: str) -> str:
    if any(ord(c) < 32 and c not in "\n\t" for c in text):
        raise BadInput(f"{what} must not contain control characters")
    return text.strip()


def _check_image(media: str, image: bytes) -> None:
    """``image`` must be a picture of the type ``media`` claims (one of ``_AVATAR_TYPES``)."""
    if not image:
        raise BadInput("the picture is empty")
    if not image.startswith(_AVATAR_TYPES[media]) or (
        media == "image/webp" and image[8:12] != b"WEBP"
    ):
        raise BadInput(f"the body is not a {media} image")


class ProfileCapability(Capability):
    """Stores the profile encrypted, serves it to experiences and publishes it."""

    migrations = (
        Migration(
            "create fields",
            """
            CREATE TABLE profile_fields (
                name TEXT PRIMARY KEY,
                value BLOB NOT NULL,
                updated REAL NOT NULL
            );
        """,
        ),
    )

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self._cached: Profile | None = None
        self._changes = 0  # a read that raced a write must not cache what it read

    def _forget(self) -> None:
        self._cached = None
        self._changes += 1

    def routes(self) -> Sequence[Endpoint]:
        return [
            api.get(
                "/", self.read, permission="read", response=Profile, summary="The owner's profile"
            ),
            api.put(
                "/",
                self.write,
                permission="write",
                body=ProfileUpdate,
                response=Profile,
                summary="Replace display name and bio",
            ),
            api.get(
                "/avatar",
                self.avatar,
                permission=None,
                raw_response="image/*",
                summary="The owner's picture (public, as it is published)",
            ),
            api.put(
                "/avatar",
                self.set_avatar,
                permission="write",
                raw_body=tuple(_AVATAR_TYPES),
                max_body=MAX_AVATAR,
                response=Profile,
                summary="Set the picture: a PNG, JPEG, GIF or WebP of at most 512 KiB",
            ),
            api.delete(
                "/avatar", self.remove_avatar, permission="write", summary="Remove the picture"
            ),
        ]

    async def _field(self, name: str) -> tuple[bytes, float] | None:
        row = await self.db.fetchone(
            "SELECT value, updated FROM profile_fields WHERE name = ?", (name,)
        )
        if row is None:
            return None
        return self.context.box().open(row["value"], context=name), row["updated"]

    async def _put(self, name: str, value: bytes | str) -> None:
        await self.db.execute(
            "INSERT OR REPLACE INTO profile_fields (name, value, updated) VALUES (?,?,?)",
            (name, self.context.box().seal(value, context=name), time.time()),
        )
        self._forget()

    async def current(self) -> Profile:
        """The profile, decrypted once and kept until it changes."""
        if self._cached is None:
            seen = self._changes
            text = await self._field("text")
            data = msgspec.json.decode(text[0]) if text else {"display_name": "", "bio": ""}
            row = await self.db.fetchone("SELECT updated FROM profile_fields WHERE name = 'avatar'")
            avatar = f"/api/profile/avatar?v={int(row['updated'] * 1000)}" if row else None
            profile = Profile(data["display_name"], data["bio"], avatar, text[1] if text else None)
            if seen != self._changes:
                return profile
            self._cached = profile
        return self._cached

    async def read(self, call: Call) -> Profile:
        return await self.current()

    async def write(self, call: Call) -> Profile:
        update: ProfileUpdate = call.body
        data = {
            "display_name": _clean(update.display_name, "display_name"),
            "bio": _clean(update.bio, "bio"),
        }
        await self._put("text", msgspec.json.encode(data))
        return await self.current()

    async def avatar(self, call: Call) -> Response:
        stored = await self._field("avatar")
        if stored is None:
            raise NotFound("the owner has not set a picture")
        media, _, image = stored[0].partition(b"\n")
        return Response(
            image, media_type=media.decode(), headers={"Cache-Control": "public, max-age=300"}
        )

    async def set_avatar(self, call: Call) -> Profile:
        media = call.request.headers["content-type"].split(";")[0].strip().lower()
        _check_image(media, call.raw)
        await self._put("avatar", media.encode() + b"\n" + call.raw)
        return await self.current()

    async def remove_avatar(self, call: Call) -> None:
        await self.db.execute("DELETE FROM profile_fields WHERE name = 'avatar'")
        self._forget()

    async def export(self, out: Export) -> None:
        """``profile.json`` and, if there is a picture, ``avatar.<ext>`` as it was uploaded."""
        text = await self._field("text")
        data = msgspec.json.decode(text[0]) if text else {"display_name": "", "bio": ""}
        avatar: dict[str, Any] | None = None
        stored = await self._field("avatar")
        if stored is not None:
            media, _, image = stored[0].partition(b"\n")
            media_type = media.decode()
            name = f"avatar.{_EXTENSIONS.get(media_type, 'bin')}"
            await out.file(name, (image,))
            avatar = {"file": name, "media_type": media_type, "updated": stored[1]}
        await out.json(
            "profile.json",
            {
                "display_name": data["display_name"],
                "bio": data["bio"],
                "updated": text[1] if text else None,
                "avatar": avatar,
                "public": list(PUBLIC),
            },
        )

    async def restore(self, part: Part) -> None:
        """The picture (if it was exported) and ``profile.json`` back as they were, with their
        times; into a twin whose profile was never set."""
        if await self.db.fetchval("SELECT count(*) FROM profile_fields"):
            raise Conflict("this twin has a profile already: import into a new twin")
        picture: tuple[str, bytes] | None = None  # written before profile.json, which names it
        if (part.peek() or "").startswith("avatar."):
            item = await part.next()
            assert item is not None
            picture = (item.name, await item.read(MAX_AVATAR))
        item = await part.next()
        if item is None or item.name != "profile.json":
            found = "nothing" if item is None else item.path
            raise BadInput(
                f"the profile part holds {found} where {part.folder}/profile.json belongs: "
                "the export is damaged"
            )
        try:
            rows = _restored(await item.json(64 * 1024), picture)
        except BadInput as exc:
            raise BadInput(f"{item.path}: {exc.message}") from None
        if (extra := part.peek()) is not None:
            raise BadInput(f"{part.folder}/{extra} is not part of a profile: the export is damaged")
        box = self.context.box()
        await self.db.executemany(
            "INSERT INTO profile_fields (name, value, updated) VALUES (?,?,?)",
            [(name, box.seal(value, context=name), updated) for name, value, updated in rows],
        )
        self._forget()

    async def public_document(self) -> Mapping[str, Any]:
        profile = await self.current()
        avatar = profile.avatar and self.context.settings.url + profile.avatar
        return {"display_name": profile.display_name, "bio": profile.bio, "avatar": avatar}


def _restored(document: Any, picture: tuple[str, bytes] | None) -> list[tuple[str, bytes, float]]:
    """The rows of an exported ``profile.json`` and the picture before it: (field, value in
    clear, updated), each value checked as the API checks it."""
    if not isinstance(document, dict):
        raise BadInput("it is not an object")
    display_name = _text(document.get("display_name"), "display_name", MAX_DISPLAY_NAME)
    bio = _text(document.get("bio"), "bio", MAX_BIO)
    public = document.get("public", list(PUBLIC))
    if not isinstance(public, list) or not all(name in PUBLIC for name in public):
        raise BadInput(f"public lists some of {', '.join(PUBLIC)}")
    rows = []
    if document.get("updated") is not None:
        text = msgspec.json.encode({"display_name": display_name, "bio": bio})
        rows.append(("text", text, seconds(document["updated"], "updated")))
    elif display_name or bio:
        raise BadInput("updated is null (a profile never set), yet it has a display_name or bio")
    avatar = document.get("avatar")
    if avatar is None:
        if picture is not None:
            raise BadInput(f"avatar is null, yet the export holds the picture {picture[0]}")
        return rows
    if not isinstance(avatar, dict):
        raise BadInput("avatar is null or an object of file, media_type and updated")
    media = avatar.get("media_type")
    if media not in _AVATAR_TYPES:
        raise BadInput(f"avatar.media_type is one of {', '.join(_AVATAR_TYPES)}, not {media!r}")
    name = f"avatar.{_EXTENSIONS[media]}"
    if avatar.get("file") != name or picture is None or picture[0] != name:
        raise BadInput(f"avatar.file is {name}, the picture the export holds before profile.json")
    try:
        _check_image(media, picture[1])
    except BadInput:
        raise BadInput(f"{name} is not a {media} picture") from None
    rows.append(
        (
            "avatar",
            media.encode() + b"\n" + picture[1],
            seconds(avatar.get("updated"), "avatar.updated"),
        )
    )
    return rows


def _text(value: Any, what: str, limit: int) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise BadInput(f"{what} is text of at most {limit} characters")
    _clean(value, what)  # refuses control characters; the text stays as exported
    return value
