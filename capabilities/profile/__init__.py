"""The ``profile`` capability: the owner's public name, bio and avatar, encrypted at rest."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from starlette.responses import Response

from twin import BadInput, Call, Capability, Endpoint, Migration, NotFound, api

if TYPE_CHECKING:
    from twin.export import Export

MAX_AVATAR = 512 * 1024
_AVATAR_TYPES = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),
}
_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/gif": "gif", "image/webp": "webp"}
PUBLIC = ("display_name", "bio", "avatar")  # what /.well-known/twin and /avatar show anyone


class Profile(msgspec.Struct):
    display_name: str
    bio: str
    avatar: str | None
    updated: float | None


class ProfileUpdate(msgspec.Struct, forbid_unknown_fields=True):
    display_name: Annotated[str, msgspec.Meta(max_length=64)]
    bio: Annotated[str, msgspec.Meta(max_length=1000)] = ""


def _clean(text: str, what: str) -> str:
    if any(ord(c) < 32 and c not in "\n\t" for c in text):
        raise BadInput(f"{what} must not contain control characters")
    return text.strip()


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
        if not call.raw:
            raise BadInput("the picture is empty")
        if not call.raw.startswith(_AVATAR_TYPES[media]) or (
            media == "image/webp" and call.raw[8:12] != b"WEBP"
        ):
            raise BadInput(f"the body is not a {media} image")
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

    async def public_document(self) -> Mapping[str, Any]:
        profile = await self.current()
        avatar = profile.avatar and self.context.settings.url + profile.avatar
        return {"display_name": profile.display_name, "bio": profile.bio, "avatar": avatar}
