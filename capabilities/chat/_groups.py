"""A group's membership as a log of signed changes: each member's twin holds the whole log,
checks every signature and every signer's right to make the change, and folds the log into
the group's current name, members and admins the same way on every twin."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from twin import BadInput, Forbidden, InvalidSignature
from twin.identity import b64url, public_key_from_did, verify

from ._text import MAX_GROUP_NAME, check_name

ACTIONS = ("create", "add", "remove", "admin", "unadmin", "rename", "leave")
MAX_MEMBERS = 1000
MAX_EVENTS = 5000  # changes one group may go through
EVENT_TYPE = "chat.member"


@dataclass
class Group:
    """What a log folds into."""

    id: str
    name: str = ""
    members: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # did: hint
    admins: set[str] = field(default_factory=set)
    creator: str = ""
    n: int = 0  # the highest event number seen

    def view(self) -> dict[str, Any]:
        return {"name": self.name, "members": sorted(self.members), "admins": sorted(self.admins)}


def new_event(group: str, n: int, by: str, action: str, **fields: Any) -> dict[str, Any]:
    """An unsigned change; the caller signs it with its peer channel."""
    event = {
        "type": EVENT_TYPE,
        "v": 1,
        "id": b64url(os.urandom(12)),
        "group": group,
        "n": n,
        "by": by,
        "action": action,
    }
    event.update({k: v for k, v in fields.items() if v is not None})
    return event


def _shape(event: object, group: str) -> dict[str, Any]:
    if not isinstance(event, dict):
        raise BadInput("a group change is an object")
    if event.get("type") != EVENT_TYPE or event.get("v") != 1:
        raise BadInput("a group change is a version 1 chat.member statement")
    if event.get("group") != group:
        raise BadInput("a group change names another group")
    if event.get("action") not in ACTIONS:
        raise BadInput(f"a group change is one of {', '.join(ACTIONS)}")
    n = event.get("n")
    if type(n) is not int or not 1 <= n <= 2**40:
        raise BadInput("a group change has a number from 1")
    for key in ("id", "by", "sig"):
        if not isinstance(event.get(key), str) or len(event[key]) > 200:
            raise BadInput(f"a group change has a {key}")
    public_key_from_did(event["by"])
    target = event.get("did")
    if event["action"] in ("add", "remove", "admin", "unadmin"):
        if not isinstance(target, str):
            raise BadInput(f"a group change '{event['action']}' names a member's did")
        public_key_from_did(target)
    if event["action"] in ("create", "rename"):
        check_name(event.get("name"))
    return event


def check_signature(event: dict[str, Any]) -> None:
    try:
        verify(event["by"], {k: v for k, v in event.items() if k != "sig"}, event["sig"])
    except InvalidSignature:
        raise InvalidSignature("a group change's signature does not match its signer") from None


def fold(group: str, events: list[dict[str, Any]]) -> tuple[Group, dict[str, Exception]]:
    """The group the events make, in (number, id) order, and the changes that do not count
    (by id, with why): those their signer had no right to make at their place in that order.
    Every twin holding the same events comes to the same group."""
    state = Group(group)
    creation = [e for e in events if e["action"] == "create"]
    if len(creation) != 1:
        raise BadInput("a group's changes begin with its creation, once")
    _apply(state, creation[0])
    skipped: dict[str, Exception] = {}
    for event in sorted(events, key=lambda e: (e["n"], e["id"])):
        if event is creation[0]:
            continue
        try:
            _apply(state, event)
        except (Forbidden, BadInput) as exc:
            skipped[event["id"]] = exc
    return state, skipped


def _apply(state: Group, event: dict[str, Any]) -> None:
    action, by, target = event["action"], event["by"], str(event.get("did"))
    state.n = max(state.n, event["n"])
    if action == "create":
        if state.creator:
            raise Forbidden("a group is created once")
        members = event.get("members")
        if not isinstance(members, list) or len(members) > MAX_MEMBERS:
            raise BadInput(f"a new group lists up to {MAX_MEMBERS} members")
        state.creator, state.name = by, event["name"]
        state.members[by] = None
        state.admins.add(by)
        for member in members:
            if not isinstance(member, str):
                raise BadInput("a new group's members are dids")
            public_key_from_did(member)
            state.members[member] = None
        return
    if action == "leave":
        if by not in state.members:
            raise Forbidden("only a member can leave a group")
        state.members.pop(by, None)
        state.admins.discard(by)
        return
    if by not in state.admins:
        raise Forbidden("only a group's admins change its members and name")
    if action == "rename":
        state.name = event["name"]
    elif action == "add":
        if target not in state.members and len(state.members) >= MAX_MEMBERS:
            raise Forbidden(f"a group has at most {MAX_MEMBERS} members")
        state.members[target] = event.get("hint")
    elif action == "remove":
        state.members.pop(target, None)
        state.admins.discard(target)
    elif action == "admin":
        if target not in state.members:
            raise Forbidden("only a member can be made an admin")
        state.admins.add(target)
    elif action == "unadmin":
        state.admins.discard(target)


def take(group: str, held: list[dict[str, Any]], new: object) -> tuple[list[dict[str, Any]], Group]:
    """The log with ``new`` events added (copies of held ones ignored) and what it folds into;
    refuses the lot if any new event is malformed, forged or not its signer's to make."""
    if not isinstance(new, list) or not 1 <= len(new) <= MAX_EVENTS:
        raise BadInput(f"a group message carries 1 to {MAX_EVENTS} changes")
    known = {e["id"] for e in held}
    log = list(held)
    # a change is taken only from a signer who is a member now (or is added by a change that
    # comes with it): numbers name no earlier change, so one removed could otherwise sign a
    # change dated before their removal
    members = set(fold(group, held)[0].members) if held else set()
    for raw in new:
        event = _shape(raw, group)
        if event["id"] in known:
            continue
        if held and event["action"] == "create":
            raise Forbidden("that group exists already: it cannot be created again")
        check_signature(event)
        if held and event["by"] not in members:
            raise Forbidden("a change is taken only from a member of the group, as it stands now")
        if event["action"] == "add":
            members.add(event["did"])
        known.add(event["id"])
        log.append(event)
    if len(log) > MAX_EVENTS:
        raise BadInput(f"a group goes through at most {MAX_EVENTS} changes")
    state, skipped = fold(group, log)
    for event in log[len(held) :]:
        if event["id"] in skipped:
            raise skipped[event["id"]]
    return log, state


__all__ = ["MAX_GROUP_NAME", "Group", "fold", "new_event", "take"]
