"""No churn: a rollout held by a failing server dry run stays quiet.

The issue: a rollout with a 98-character name was held by its dry run (the API server refuses the
canary's `rollouts.guarded.dev/rollout` label: a label value has at most 63 characters). The dry run
creates the canary with generateName, the server's message names the random name it generated, so
the gate's message changed on every reconcile; each change wrote status and an Event, and the write
woke the rollout again: 419 Warning Events in 48 s. Here the same rollout is watched for a while:
its message must be the same every time, its status written only a few times, its Events few.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter

from guarded.core.actions import Event
from guarded.kube.client import KubeClient
from guarded.kube.events import post_events
from operator_process import OperatorProcess
from rollouts import Shop, guarded_rollout, shop_deployment
from testbed import Cluster
from waiting import eventually

LONG_ROLLOUT = ("release-held-by-a-dry-run-" * 4)[:97].rstrip("-") + "x"
# The target's name is long too: the name the server generates from `<target>-canary-` is then its
# first 58 characters plus 5 random ones, a name that is neither the prefix nor the canary's.
LONG_TARGET = ("shop-with-a-very-long-name-" * 4)[:97].rstrip("-") + "z"
WATCH_SECONDS = 45.0
GENERATED = re.compile(r'"[a-z0-9.-]*-canary-[a-z0-9]{5}"')


def dry_run_condition(shop: Shop, name: str) -> dict | None:
    conditions = shop.status(name).get("conditions") or []
    validated = next((c for c in conditions if c["type"] == "Validated"), None)
    if validated and validated["status"] == "False" and "dry run" in validated.get("message", ""):
        return validated
    return None


def test_a_rollout_held_by_a_failing_dry_run_writes_few_events_and_few_statuses(
        cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    assert len(LONG_ROLLOUT) == 98 and len(LONG_TARGET) == 98
    shop = Shop(cluster, namespace, name=LONG_TARGET)
    target = shop_deployment("shop", replicas=2)  # labels app=shop: a label value may not be 98 characters
    target["metadata"]["name"] = LONG_TARGET
    shop.apps.create_namespaced_deployment(namespace, target)
    eventually(lambda: shop.ready(LONG_TARGET) == 2, timeout=90, what="2 ready target pods")

    shop.create_rollout(guarded_rollout(LONG_ROLLOUT, target=LONG_TARGET))
    held = eventually(lambda: dry_run_condition(shop, LONG_ROLLOUT), timeout=60,
                      what="the rollout held by its dry run")
    assert shop.status(LONG_ROLLOUT).get("phase") == "Blocked"
    assert "must be no more than 63 characters" in held["message"]
    assert f'"{LONG_TARGET}-canary"' in held["message"], held["message"]
    assert not GENERATED.search(held["message"]), f"a generated name in: {held['message']}"
    time.sleep(3)  # the first reconciles settle (the gates are judged, the first Events posted)

    def events() -> tuple[int, int]:
        found = shop.events(LONG_ROLLOUT)
        return len(found), sum(e.count or 1 for e in found)

    objects_before, series_before = events()
    versions: list[str] = []
    messages: Counter[str] = Counter()
    started = time.monotonic()
    while time.monotonic() - started < WATCH_SECONDS:
        obj = shop.rollout(LONG_ROLLOUT)
        assert obj is not None
        if not versions or versions[-1] != obj["metadata"]["resourceVersion"]:
            versions.append(obj["metadata"]["resourceVersion"])
        condition = dry_run_condition(shop, LONG_ROLLOUT)
        messages[condition["message"] if condition else "<not held by the dry run>"] += 1
        time.sleep(0.25)
    minutes = (time.monotonic() - started) / 60
    objects_after, series_after = events()
    new_objects, new_series = objects_after - objects_before, series_after - series_before
    report = (f"over {minutes * 60:.0f} s: {new_objects} new Event objects ({new_objects / minutes:.1f}/min), "
              f"series count +{new_series} ({new_series / minutes:.1f}/min), "
              f"{len(versions) - 1} resourceVersion changes, {len(messages)} distinct messages")
    print(report)

    assert list(messages) == [held["message"]], f"the message changed: {report}\n{messages}"
    assert len(versions) - 1 <= 3, f"status written again and again: {report}"
    assert new_objects / minutes <= 3, f"Event objects keep being created: {report}"
    assert new_series / minutes <= 12, f"Events repeat too often: {report}"
    # Whatever was posted is aggregated: no two Event objects say the same thing about the rollout.
    keys = Counter((e.type, e.reason, e.message) for e in shop.events(LONG_ROLLOUT))
    assert max(keys.values()) == 1, keys


def test_the_same_event_posted_again_is_counted_on_one_event_with_the_operators_own_rights(
        cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    shop = Shop(cluster, namespace)
    shop.create_rollout(guarded_rollout("release", target="absent"))
    obj = shop.rollout("release")
    assert obj is not None
    client = KubeClient(cluster.api("operator"))  # the operator's identity: its RBAC must allow get and patch
    held = Event(type="Warning", reason="Quiet", message="the same words each time")
    for _ in range(3):
        asyncio.run(post_events(client, obj, (held,)))
        time.sleep(1.1)  # timestamps have one-second resolution
    asyncio.run(post_events(client, obj, (Event(type="Normal", reason="Other", message="something else"),)))
    found = {e.reason: e for e in shop.events("release") if e.reason in ("Quiet", "Other")}
    assert set(found) == {"Quiet", "Other"}
    assert found["Quiet"].count == 3 and found["Other"].count == 1
    assert found["Quiet"].first_timestamp < found["Quiet"].last_timestamp
    assert found["Quiet"].metadata.name.startswith("release.")
