"""No churn: what reaches status and Events is the same for the same state, a repeated Event is counted
on one object, and a held rollout is not woken by its own status writes."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import kubernetes
import pytest
from kubernetes.client.rest import ApiException

from guarded.core.actions import Event
from guarded.handlers import operator as handlers
from guarded.kube import events
from guarded.kube.client import KubeClient
from guarded.kube.guard import stable_dry_run_error

LONG = "r" * 98  # the rollout: a 98-character name, a label value the API server refuses

LABEL_RULE = ("must be no more than 63 characters")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def server_message(generated: str, *errors: str) -> str:
    """As the API server words a refused create: `<Kind> "<generated name>" is invalid: [...]`."""
    body = errors[0] if len(errors) == 1 else f"[{', '.join(errors)}]"
    return f'Deployment.apps "{generated}" is invalid: {body}'


# -- the dry run's message ------------------------------------------------------------------------

def test_the_generated_name_becomes_the_canary_name_wherever_it_occurs() -> None:
    messages = {
        stable_dry_run_error(server_message(
            f"xxxx-canary-{suffix}",
            f'metadata.name: Invalid value: "xxxx-canary-{suffix}": {LABEL_RULE}'), "xxxx-canary-", "xxxx-canary")
        for suffix in ("7k2pq", "b9xzt", "2h4mm")
    }
    assert messages == {'Deployment.apps "xxxx-canary" is invalid: '
                        f'metadata.name: Invalid value: "xxxx-canary": {LABEL_RULE}'}


def test_a_long_prefix_is_truncated_as_the_server_truncates_it() -> None:
    target = "t" * 98
    prefix = f"{target}-canary-"
    generated = prefix[:58] + "x7k2q"  # apiserver: base[:63-5] + 5 random characters
    message = stable_dry_run_error(server_message(generated, f'metadata.labels: Invalid value: "{LONG}": '
                                                             f'{LABEL_RULE}'), prefix, f"{target}-canary")
    assert generated not in message
    assert message.startswith(f'Deployment.apps "{target}-canary" is invalid: ')
    assert LONG in message  # the offending value is kept: it tells the user what to fix


def test_the_field_errors_of_an_aggregate_are_sorted() -> None:
    # The API server validates a map's labels in Go's random map order: two runs may list them differently.
    a = f'metadata.labels: Invalid value: "{LONG}": {LABEL_RULE}'
    b = (f'metadata.labels: Invalid value: "x{LONG}": a valid label must be an empty string or consist of '
         "alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character")
    c = f'spec.template.labels: Invalid value: "{LONG}": {LABEL_RULE}'
    one = stable_dry_run_error(server_message("shop-canary-7k2pq", a, b, c), "shop-canary-", "shop-canary")
    two = stable_dry_run_error(server_message("shop-canary-4mz8w", c, b, a), "shop-canary-", "shop-canary")
    assert one == two
    assert one == f'Deployment.apps "shop-canary" is invalid: [{a}, {b}, {c}]'


def test_other_names_and_unrelated_messages_are_left_alone() -> None:
    message = ('admission webhook "policy.example" denied the request: "my-shop-canary-7k2pq" and '
               '"shop-canary-7k2pqz" are not ours')
    assert stable_dry_run_error(message, "shop-canary-", "shop-canary") == message
    assert stable_dry_run_error("forbidden", "shop-canary-", "shop-canary") == "forbidden"


def test_a_forbidden_message_names_the_canary() -> None:
    message = ('deployments.apps "shop-canary-7k2pq" is forbidden: ValidatingAdmissionPolicy "p" with binding '
               '"b" denied request: no')
    assert stable_dry_run_error(message, "shop-canary-", "shop-canary") == message.replace("-7k2pq", "")


# -- Events ---------------------------------------------------------------------------------------

def rollout(name: str = "release", uid: str = "u-1") -> dict[str, Any]:
    return {"apiVersion": "rollouts.guarded.dev/v1alpha1", "kind": "GuardedRollout",
            "metadata": {"name": name, "namespace": "shop", "uid": uid, "resourceVersion": "7"}}


HELD = Event(type="Warning", reason="ValidationFailed", message="the API server rejected it")


def test_an_event_is_named_by_what_it_says_about_which_object() -> None:
    name = events.event_name(rollout(), HELD)
    assert re.fullmatch(r"release\.[0-9a-f]{16}", name)
    assert events.event_name(rollout(), HELD) == name
    others = {
        events.event_name(rollout(uid="u-2"), HELD),
        events.event_name(rollout(name="other"), HELD),
        events.event_name(rollout(), Event(type="Normal", reason=HELD.reason, message=HELD.message)),
        events.event_name(rollout(), Event(type=HELD.type, reason="Other", message=HELD.message)),
        events.event_name(rollout(), Event(type=HELD.type, reason=HELD.reason, message=HELD.message + ".")),
    }
    assert name not in others and len(others) == 5


@pytest.mark.parametrize("length", [1, 98, 236, 237, 253])
def test_an_event_name_is_a_valid_name_for_any_rollout_name(length: int) -> None:
    name = events.event_name(rollout(name=("a-b." * 100)[:length - 1] + "z"), HELD)
    assert len(name) <= 253 and DNS_SUBDOMAIN.match(name), name


def test_a_repeat_counts_one_more_and_keeps_the_first_time() -> None:
    now = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    existing = {"metadata": {"name": "release.x", "resourceVersion": "41"}, "count": 6,
                "firstTimestamp": "2025-01-02T03:00:00Z"}
    patch = events.repeat_patch(existing, now)
    assert patch == {"metadata": {"resourceVersion": "41"}, "count": 7, "lastTimestamp": "2025-01-02T03:04:05Z"}
    assert events.repeat_patch({"metadata": {"resourceVersion": "1"}}, now)["count"] == 2


class FakeEvents:
    """The Events API as the API server answers it: names are unique, patches check resourceVersion."""

    def __init__(self) -> None:
        self.stored: dict[str, dict[str, Any]] = {}
        self.version = 0
        self.creates = 0
        self.reads = 0
        self.patches = 0
        self.fail: int | None = None  # answer every call with this status
        self.conflicts = 0            # the next patches that lose a race

    def _check(self) -> None:
        if self.fail is not None:
            raise ApiException(status=self.fail, reason="boom")

    def _bump(self, obj: dict[str, Any]) -> None:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)

    def create_namespaced_event(self, namespace: str, body: Any, **_: Any) -> Any:
        self._check()
        self.creates += 1
        obj = kubernetes.client.ApiClient().sanitize_for_serialization(body)
        if obj["metadata"]["name"] in self.stored:
            raise ApiException(status=409, reason="AlreadyExists")
        self._bump(obj)
        self.stored[obj["metadata"]["name"]] = obj
        return SimpleNamespace(data=json.dumps(obj).encode())

    def read_namespaced_event(self, name: str, namespace: str, **_: Any) -> Any:
        self._check()
        self.reads += 1
        if name not in self.stored:
            raise ApiException(status=404, reason="NotFound")
        return SimpleNamespace(data=json.dumps(self.stored[name]).encode())

    def patch_namespaced_event(self, name: str, namespace: str, body: dict[str, Any], **_: Any) -> Any:
        self._check()
        obj = self.stored.get(name)
        if obj is None:
            raise ApiException(status=404, reason="NotFound")
        if self.conflicts or body["metadata"]["resourceVersion"] != obj["metadata"]["resourceVersion"]:
            self.conflicts = max(self.conflicts - 1, 0)
            self._bump(obj)  # someone else counted meanwhile
            obj["count"] += 1
            raise ApiException(status=409, reason="Conflict")
        obj.update({k: v for k, v in body.items() if k != "metadata"})
        self._bump(obj)
        self.patches += 1
        return SimpleNamespace(data=json.dumps(obj).encode())


@pytest.fixture
def api() -> tuple[KubeClient, FakeEvents]:
    client = KubeClient(kubernetes.client.ApiClient())
    fake = FakeEvents()
    client.core = fake  # type: ignore[assignment]
    return client, fake


def post(client: KubeClient, *evs: Event, obj: dict[str, Any] | None = None) -> None:
    asyncio.run(events.post_events(client, obj or rollout(), evs))


def test_repeated_identical_events_are_one_object_whose_count_grows(api: tuple[KubeClient, FakeEvents]) -> None:
    client, fake = api
    for _ in range(5):
        post(client, HELD)
    (only,) = fake.stored.values()
    assert only["count"] == 5
    assert only["firstTimestamp"] <= only["lastTimestamp"]
    assert only["involvedObject"]["name"] == "release" and only["reason"] == "ValidationFailed"
    post(client, Event(type="Normal", reason="GatesPassed", message="all gates pass"))
    assert sorted(e["count"] for e in fake.stored.values()) == [1, 5]


def test_a_repeat_the_operator_wrote_is_one_patch_without_a_read(api: tuple[KubeClient, FakeEvents]) -> None:
    """As client-go's correlator: the operator remembers the Events it wrote, so a repeat is one conditional
    patch; a new operator (no memory) creates, is refused, reads and patches, as before."""
    client, fake = api
    for _ in range(4):
        post(client, HELD)
    (only,) = fake.stored.values()
    assert only["count"] == 4
    assert (fake.creates, fake.reads, fake.patches) == (1, 0, 3)
    restarted = KubeClient(kubernetes.client.ApiClient())
    restarted.core = fake  # type: ignore[assignment]
    post(restarted, HELD)
    assert only["count"] == 5 and (fake.creates, fake.reads, fake.patches) == (2, 1, 4)
    post(restarted, HELD)   # it remembers from then on
    assert only["count"] == 6 and (fake.creates, fake.reads, fake.patches) == (2, 1, 5)


def test_a_decisions_events_are_posted_in_the_background_in_the_order_given(
        api: tuple[KubeClient, FakeEvents]) -> None:
    """submit_events returns before anything is sent; the sender then posts each, aggregated as before."""
    client, fake = api
    other = Event(type="Normal", reason="GatesPassed", message="all gates pass")

    async def go() -> int:
        events.submit_events(client, rollout(), (HELD, other))
        events.submit_events(client, rollout(), (HELD,))
        sent_at_once = fake.creates + fake.patches
        await events.event_sender(client).drain()
        return sent_at_once

    assert asyncio.run(go()) == 0
    assert sorted((e["reason"], e["count"]) for e in fake.stored.values()) == [("GatesPassed", 1),
                                                                             ("ValidationFailed", 2)]


def test_events_beyond_the_waiting_limit_are_dropped_and_a_failed_post_does_not_stop_the_sender(
        api: tuple[KubeClient, FakeEvents], monkeypatch: pytest.MonkeyPatch) -> None:
    client, fake = api
    monkeypatch.setattr(events, "WAITING_LIMIT", 2)
    monkeypatch.setattr(events, "SENDERS", 1)

    async def go() -> None:
        events.submit_events(client, rollout(), tuple(
            Event(type="Normal", reason=f"R{i}", message=str(i)) for i in range(5)))
        await events.event_sender(client).drain()
        assert sorted(e["reason"] for e in fake.stored.values()) == ["R0", "R1"]   # the other three dropped
        fake.fail = 500
        events.submit_events(client, rollout(), (HELD,))
        await events.event_sender(client).drain()
        fake.fail = None
        events.submit_events(client, rollout(), (HELD,))
        await events.event_sender(client).drain()

    asyncio.run(go())
    assert sorted(e["reason"] for e in fake.stored.values()) == ["R0", "R1", "ValidationFailed"]


def test_the_memory_of_events_is_bounded() -> None:
    memory = events.KnownEvents(limit=3)
    for i in range(5):
        memory.remember(("shop", f"e{i}"), {"metadata": {"resourceVersion": str(i)}, "count": 1})
    assert len(memory) == 3 and memory.get(("shop", "e0")) is None and memory.get(("shop", "e4")) == ("4", 1)
    memory.remember(("shop", "e5"), {})   # an answer that is not an Event: nothing remembered
    assert memory.get(("shop", "e5")) is None


def test_a_lost_race_is_counted_again_and_an_expired_event_is_created_again(
        api: tuple[KubeClient, FakeEvents]) -> None:
    client, fake = api
    post(client, HELD)
    fake.conflicts = 1
    post(client, HELD)
    (only,) = fake.stored.values()
    assert only["count"] == 3  # the other writer's one, then ours
    fake.stored.clear()  # the API server's event TTL passed
    post(client, HELD)
    assert [e["count"] for e in fake.stored.values()] == [1]


def test_events_are_best_effort(api: tuple[KubeClient, FakeEvents]) -> None:
    client, fake = api
    fake.fail = 403
    post(client, HELD, HELD)  # nothing raised
    assert fake.stored == {}


# -- waking a rollout ------------------------------------------------------------------------------

def body(phase: str | None = "Blocked", rv: str = "1", message: str = "held", **annotations: str) -> dict[str, Any]:
    stage = {"Succeeded": "Succeeded", "RolledBack": "RolledBack", "Failed": "Failed", "Progressing": "Bake",
             "Pending": "Pending", "Blocked": "Pending"}.get(phase or "")
    return {"apiVersion": "rollouts.guarded.dev/v1alpha1", "kind": "GuardedRollout",
            "metadata": {"name": "release", "namespace": "shop", "uid": "u-1", "resourceVersion": rv,
                         "generation": 1, "annotations": annotations,
                         "managedFields": [{"manager": "guarded", "time": f"t{rv}"}]},
            "spec": {"target": {"name": "shop"}},
            "status": {"phase": phase, "message": message, **({"stage": stage} if stage else {})}}


@pytest.fixture
def fresh_seen() -> None:
    handlers._seen.clear()


@pytest.mark.usefixtures("fresh_seen")
def test_a_rollouts_own_status_write_does_not_wake_it() -> None:
    key = ("shop", "release")
    assert handlers.seen(key, body(rv="1"), deleted=False) == (True, False)  # first sight
    assert handlers.seen(key, body(rv="2", message="held again"), deleted=False) == (False, False)
    assert handlers.seen(key, body(rv="3", message="held again"), deleted=False) == (False, False)


@pytest.mark.usefixtures("fresh_seen")
def test_a_change_by_someone_else_wakes_it() -> None:
    key = ("shop", "release")
    handlers.seen(key, body(rv="1"), deleted=False)
    assert handlers.seen(key, body(rv="2", **{"rollouts.guarded.dev/request": "{}"}), deleted=False)[0]
    spec_changed = body(rv="3", **{"rollouts.guarded.dev/request": "{}"})
    spec_changed["spec"]["target"]["name"] = "shop-2"
    spec_changed["metadata"]["generation"] = 2
    assert handlers.seen(key, spec_changed, deleted=False)[0]


@pytest.mark.usefixtures("fresh_seen")
def test_every_rollout_is_woken_once_when_one_ends_and_when_one_is_deleted() -> None:
    key = ("shop", "release")
    handlers.seen(key, body(phase="Progressing", rv="1"), deleted=False)
    assert handlers.seen(key, body(phase="Succeeded", rv="2"), deleted=False) == (False, True)
    assert handlers.seen(key, body(phase="Succeeded", rv="3"), deleted=False) == (False, False)
    assert handlers.seen(key, body(phase="Succeeded", rv="4", a="b"), deleted=False) == (True, False)
    assert handlers.seen(key, body(phase="Succeeded", rv="5"), deleted=True) == (True, True)
    assert key not in handlers._seen


def test_a_held_rollout_is_reconciled_at_a_bounded_rate_and_a_wave_is_not_slowed() -> None:
    assert handlers.spacing(0.0, 0.0) == 0.0      # the next wave, at once
    assert handlers.spacing(1.0, 0.0) == 0.0      # a wave polling its pods
    assert handlers.spacing(0.05, 0.0) == 0.0     # a conflict: decide again on fresh data
    assert handlers.spacing(5.0, 0.1) == pytest.approx(handlers.MIN_SPACING - 0.1)
    assert handlers.spacing(10.0, 0.0) == handlers.MIN_SPACING
    assert handlers.spacing(10.0, 3.0) == 0.0     # woken long after: no holding back


@pytest.mark.usefixtures("fresh_seen")
def test_a_rollout_that_ended_is_not_woken_when_others_end_unless_it_is_a_parent() -> None:
    ended, running, parent, unseen = ("shop", "ended"), ("shop", "running"), ("shop", "parent"), ("shop", "new")
    handlers.seen(ended, body(phase="Succeeded", rv="1"), deleted=False)
    handlers.seen(running, body(phase="Progressing", rv="1"), deleted=False)
    with_consumers = body(phase="Succeeded", rv="1")
    with_consumers["status"]["consumers"] = [{"name": "shop-web", "phase": "Progressing"}]
    handlers.seen(parent, with_consumers, deleted=False)
    assert [handlers.settled(k) for k in (ended, running, parent, unseen)] == [True, False, False, False]
    events = {k: asyncio.Event() for k in (ended, running, parent, unseen)}
    handlers._wakers.update(events)
    try:
        handlers.wake_all(settled_too=False)   # another rollout ended: a slot, a claim or a consumer freed
        assert {k for k, e in events.items() if e.is_set()} == {running, parent, unseen}
        handlers.wake_all()                   # a policy changed: every rollout looks again
        assert all(e.is_set() for e in events.values())
    finally:
        for k in events:
            handlers._wakers.pop(k, None)
    handlers.seen(ended, body(phase="Succeeded", rv="2", a="b"), deleted=False)   # restarted by a spec change:
    handlers.seen(ended, body(phase="Pending", rv="3", a="b"), deleted=False)     # no longer settled
    assert not handlers.settled(ended)


@pytest.mark.usefixtures("fresh_seen")
def test_settled_is_the_stage_not_the_phase_and_never_a_consumers_rollout() -> None:
    """Failed by an invalid spec while it still removes its canary is not settled (the phase says Failed as
    soon as the spec no longer parses); a consumer's rollout restarts with its parent, which it learns by
    looking, so it never is either."""
    cleaning = body(phase="Failed")
    cleaning["status"]["stage"] = "RollingBack"
    assert not handlers.is_settled(cleaning)
    done = body(phase="Failed")
    done["status"]["stage"] = "Failed"
    assert handlers.is_settled(done)
    consumer = body(phase="RolledBack")
    consumer["status"]["stage"] = "RolledBack"
    consumer["metadata"]["labels"] = {"rollouts.guarded.dev/part-of": "shared-config"}
    assert not handlers.is_settled(consumer)
    handlers.seen(("shop", "cleaning"), cleaning, deleted=False)
    assert not handlers.settled(("shop", "cleaning"))


def test_a_waiting_daemon_holds_no_decision(monkeypatch: pytest.MonkeyPatch) -> None:
    """Between reconciles a rollout's daemon keeps nothing of the last decision: its status is tens of KiB of
    models, and a thousand waiting daemons each holding one was a large part of the operator's memory."""
    import gc
    import weakref

    from guarded.api.rollout import GuardedRolloutStatus
    from guarded.core.engine import Decision
    from guarded.handlers.reconcile import Outcome

    made: list[weakref.ref] = []

    async def reconciled(*_: Any) -> Outcome:
        decision = Decision(actions=(), status=GuardedRolloutStatus(), events=(), requeue_after=None)
        made.append(weakref.ref(decision))
        return Outcome(None, "shop", decision)

    class Stopped:
        flag = False

        def __bool__(self) -> bool:
            return self.flag

    monkeypatch.setattr(handlers, "reconcile", reconciled)
    monkeypatch.setattr(handlers, "serve_caches", lambda _: None)
    stopped = Stopped()

    async def go() -> None:
        daemon = asyncio.create_task(handlers.run_rollout(
            namespace="shop", name="held", stopped=stopped, memo=SimpleNamespace(client=None, provider=None)))
        while not made:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)   # the daemon now waits for its next reconcile (IDLE_SECONDS)
        gc.collect()
        assert made[0]() is None, "the waiting daemon still holds its last decision"
        stopped.flag = True
        handlers._wake(("shop", "held"))
        await asyncio.wait_for(daemon, 5)

    asyncio.run(go())
