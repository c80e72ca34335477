"""A group's signed membership log: every twin that holds the same changes comes to the same
members, admins and name, in whatever order they arrived; forged and unfounded changes are
refused."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from twin_capabilities.chat._groups import fold, new_event, take

from twin import BadInput, Forbidden, InvalidSignature
from twin.identity import Identity

GROUP = "g" + "0" * 24


def signed(who: Identity, n: int, action: str, **fields: Any) -> dict[str, Any]:
    event = new_event(GROUP, n, who.did, action, **fields)
    return {**event, "sig": who.sign(event)}


@pytest.fixture()
def people() -> dict[str, Identity]:
    return {name: Identity.generate() for name in ("ada", "bob", "cy", "dee", "eve")}


def history(p: dict[str, Identity]) -> list[dict[str, Any]]:
    ada, bob, cy, dee = p["ada"], p["bob"], p["cy"], p["dee"]
    return [
        signed(ada, 1, "create", name="Engine", members=[bob.did, cy.did]),
        signed(ada, 2, "admin", did=bob.did),
        signed(bob, 3, "add", did=dee.did),  # rests on the promotion before it
        signed(ada, 3, "remove", did=cy.did),  # the same number from another admin
        signed(bob, 4, "rename", name="Difference engine"),
        signed(dee, 5, "leave"),
    ]


def test_every_order_of_arrival_folds_to_the_same_group(people: dict[str, Identity]) -> None:
    events = history(people)
    expected, skipped = fold(GROUP, events)
    assert skipped == {}
    assert expected.name == "Difference engine"
    assert set(expected.members) == {people["ada"].did, people["bob"].did}
    assert expected.admins == {people["ada"].did, people["bob"].did}
    for order in itertools.permutations(events):
        state, _ = fold(GROUP, list(order))
        assert state.view() == expected.view()


def test_changes_taken_one_by_one_in_any_order_give_the_same_group(
    people: dict[str, Identity],
) -> None:
    events = history(people)
    creation, rest = events[0], events[1:]
    expected = fold(GROUP, events)[0].view()
    for order in itertools.permutations(rest):
        log, state = take(GROUP, [], [creation])
        for event in order:
            try:
                log, state = take(GROUP, log, [event])
            except Forbidden:
                # it came before what it rests on (bob's add before his promotion, dee's
                # leave before she was added): take it again with that, as a change always
                # travels with the promotions and the add of its signer
                grounds = [
                    e
                    for e in rest
                    if e["action"] == "admin" or (e["action"] == "add" and e["did"] == event["by"])
                ]
                log, state = take(GROUP, log, [*grounds, event])
        assert state.view() == expected


def test_forged_and_unfounded_changes_are_refused(people: dict[str, Identity]) -> None:
    ada, bob, cy, eve = people["ada"], people["bob"], people["cy"], people["eve"]
    log, state = take(GROUP, [], [signed(ada, 1, "create", name="Engine", members=[bob.did])])
    before = state.view()
    with pytest.raises(Forbidden, match="admins"):
        take(GROUP, log, [signed(bob, 2, "add", did=eve.did)])  # bob is not an admin
    with pytest.raises(Forbidden, match="member"):
        take(GROUP, log, [signed(cy, 2, "leave")])  # cy was never in it
    forged = signed(ada, 2, "add", did=eve.did)
    with pytest.raises(InvalidSignature):
        take(GROUP, log, [{**forged, "did": cy.did}])  # the signed change, altered
    with pytest.raises(InvalidSignature):
        take(GROUP, log, [{**signed(eve, 2, "add", did=eve.did), "by": ada.did}])
    with pytest.raises(Forbidden, match="exists already"):
        take(GROUP, log, [signed(bob, 1, "create", name="Mine", members=[eve.did])])
    with pytest.raises(BadInput, match="another group"):
        take(GROUP, log, [{**signed(ada, 2, "rename", name="x"), "group": "g" + "1" * 24}])
    for broken in ({}, [], "x", {**forged, "n": 0}, {**forged, "action": "own"}):
        with pytest.raises(BadInput):
            take(GROUP, log, [broken])
    with pytest.raises(BadInput, match="direction overrides"):
        take(GROUP, log, [signed(ada, 2, "rename", name="gpj.\u202eexe")])
    assert fold(GROUP, log)[0].view() == before
