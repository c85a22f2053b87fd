"""The watch cache answers a read only when it cannot mislead a decision: once synced (served), and never
older than the operator's own last write to the object; anything in doubt goes to the API server."""

from __future__ import annotations

import asyncio
from typing import Any

import kubernetes
import pytest

from guarded.kube import cache as cache_module
from guarded.kube.cache import WatchCache
from guarded.kube.client import KubeClient
from guarded.kube.patches import apply_merge_patch, merge_patch


def deployment(name: str, rv: str, replicas: int = 1) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "shop", "resourceVersion": rv}, "spec": {"replicas": replicas}}


class Index(dict):
    """What kopf's index looks like to the cache: (namespace, name) -> a collection of one object."""

    def put(self, obj: dict[str, Any]) -> None:
        self[(obj["metadata"]["namespace"], obj["metadata"]["name"])] = [obj]


def cache_with(*objs: dict[str, Any]) -> tuple[WatchCache, Index]:
    cache, index = WatchCache(), Index()
    for obj in objs:
        index.put(obj)
    cache.serve("deployments", index)
    return cache, index


def test_a_kind_without_a_synced_index_is_never_read_from_the_cache() -> None:
    assert WatchCache().read("deployments", "shop", "shop") == (False, None)


def test_writes_of_kinds_the_cache_never_serves_leave_no_marks() -> None:
    """Events are written all the time and never read from the cache: marking them piled up for the life of the
    process (and every list read scanned the pile)."""
    cache, index = WatchCache(kinds=("deployments", "pods")), Index()
    index.put(deployment("shop", "10"))
    cache.serve("deployments", index)
    for i in range(100):
        cache.touched("events", "shop", f"release.{i:016x}")
        cache.wrote("events", "shop", f"release.{i:016x}", str(i), {"metadata": {"resourceVersion": str(i)}})
    assert cache._written == {} and cache._own == {}
    cache.touched("deployments", "shop", "shop")   # a kind it serves: marked as ever
    assert cache.read("deployments", "shop", "shop") == (False, None)
    with pytest.raises(ValueError, match="services"):
        cache.serve_lists("services", Index())   # a kind not declared: its writes would not have been marked


def test_copies_of_our_writes_that_no_read_asked_for_are_let_go_once_stale() -> None:
    cache, _ = cache_with()
    now = [100.0]
    cache.clock = lambda: now[0]
    for i in range(3):
        cache.wrote("deployments", "shop", f"d{i}", "5", deployment(f"d{i}", "5"))
    assert len(cache._own) == 3
    now[0] += cache_module.OWN_SECONDS + 0.1
    cache.wrote("deployments", "shop", "later", "6", deployment("later", "6"))
    assert list(cache._own) == [("deployments", "shop", "later")]


def test_a_synced_cache_answers_for_present_and_absent_objects() -> None:
    cache, _ = cache_with(deployment("shop", "10"))
    assert cache.read("deployments", "shop", "shop") == (True, deployment("shop", "10"))
    assert cache.read("deployments", "shop", "shop-canary") == (True, None)


def test_after_our_own_write_the_copy_is_not_trusted_until_the_watch_shows_that_version() -> None:
    cache, index = cache_with(deployment("shop-canary", "10", replicas=1))
    cache.touched("deployments", "shop", "shop-canary")           # the scale is sent
    cache.wrote("deployments", "shop", "shop-canary", "11")       # and produced resourceVersion 11
    assert cache.read("deployments", "shop", "shop-canary") == (False, None)
    index.put(deployment("shop-canary", "11", replicas=3))        # the watch delivers it
    assert cache.read("deployments", "shop", "shop-canary") == (True, deployment("shop-canary", "11", 3))


def test_meanwhile_the_object_our_write_returned_answers_for_a_few_seconds_then_the_api_server() -> None:
    cache, index = cache_with(deployment("shop-canary", "10", replicas=1))
    now = [100.0]
    cache.clock = lambda: now[0]
    returned = {**deployment("shop-canary", "11", replicas=3), "status": {"readyReplicas": 1}}
    returned["metadata"]["managedFields"] = [{"manager": "guarded-rollouts"}]
    cache.touched("deployments", "shop", "shop-canary")
    cache.wrote("deployments", "shop", "shop-canary", "11", returned)
    trusted, obj = cache.read("deployments", "shop", "shop-canary")
    assert trusted and obj is not None and obj["spec"] == {"replicas": 3} and obj["status"] == {"readyReplicas": 1}
    assert "managedFields" not in obj["metadata"]               # as the index keeps objects
    obj["spec"]["replicas"] = 99                                 # a copy, as every read hands out
    assert cache.read("deployments", "shop", "shop-canary")[1]["spec"] == {"replicas": 3}
    now[0] += cache_module.OWN_SECONDS                           # the watch lags past the while
    assert cache.read("deployments", "shop", "shop-canary") == (False, None)
    index.put(deployment("shop-canary", "11", replicas=3))       # it delivers: the watch's copy again
    assert cache.read("deployments", "shop", "shop-canary") == (True, deployment("shop-canary", "11", 3))


def test_once_the_watch_is_past_our_write_its_copy_is_read_not_the_write_s() -> None:
    cache, index = cache_with(deployment("shop-canary", "10", replicas=1))
    cache.touched("deployments", "shop", "shop-canary")
    cache.wrote("deployments", "shop", "shop-canary", "11", deployment("shop-canary", "11", replicas=3))
    index.put({**deployment("shop-canary", "12", replicas=3), "status": {"readyReplicas": 3}})  # ours, then more
    assert cache.read("deployments", "shop", "shop-canary") == (
        True, {**deployment("shop-canary", "12", replicas=3), "status": {"readyReplicas": 3}})
    cache.wrote("deployments", "shop", "shop-canary", "x13", deployment("shop-canary", "x13"))  # not a revision
    index.put(deployment("shop-canary", "14"))
    assert cache.read("deployments", "shop", "shop-canary")[1] == deployment("shop-canary", "x13")


def test_a_returned_object_of_another_version_or_a_later_write_of_unknown_outcome_is_never_served() -> None:
    cache, _ = cache_with(deployment("shop", "10"))
    cache.wrote("deployments", "shop", "shop", "11", deployment("shop", "12"))   # not what the write produced
    assert cache.read("deployments", "shop", "shop") == (False, None)
    cache.wrote("deployments", "shop", "shop", "13", deployment("shop", "13", replicas=2))
    assert cache.read("deployments", "shop", "shop")[0] is True
    cache.touched("deployments", "shop", "shop")                 # another write is sent: its outcome unknown
    assert cache.read("deployments", "shop", "shop") == (False, None)


def test_a_write_of_unknown_outcome_waits_for_a_get_that_the_watch_agrees_with() -> None:
    cache, index = cache_with(deployment("shop", "10"))
    cache.touched("deployments", "shop", "shop")                  # sent; conflicted, failed, or rv unknown
    assert cache.read("deployments", "shop", "shop")[0] is False
    cache.settle("deployments", "shop", "shop", deployment("shop", "12"))   # the API server is ahead
    assert cache.read("deployments", "shop", "shop")[0] is False
    index.put(deployment("shop", "12"))
    assert cache.read("deployments", "shop", "shop")[0] is False  # only a GET that agrees settles it
    cache.settle("deployments", "shop", "shop", deployment("shop", "12"))
    assert cache.read("deployments", "shop", "shop") == (True, deployment("shop", "12"))


def test_a_deleted_object_is_trusted_absent_once_both_say_so() -> None:
    cache, index = cache_with(deployment("shop-canary", "10"))
    cache.touched("deployments", "shop", "shop-canary")
    del index[("shop", "shop-canary")]
    cache.settle("deployments", "shop", "shop-canary", None)
    assert cache.read("deployments", "shop", "shop-canary") == (True, None)


def test_the_copy_handed_out_is_not_the_cached_object() -> None:
    cache, index = cache_with(deployment("shop", "10"))
    _, obj = cache.read("deployments", "shop", "shop")
    assert obj is not None
    obj["spec"] = {"replicas": 99}
    assert index[("shop", "shop")][0]["spec"] == {"replicas": 1}


def test_every_named_write_the_client_sends_marks_the_object_before_it_leaves() -> None:
    cache, _ = cache_with(deployment("shop", "10"))
    api = kubernetes.client.ApiClient()

    def refused(*_: Any, **__: Any) -> None:
        raise ConnectionRefusedError("nothing listens")

    api.rest_client.pool_manager.request = refused  # the write fails after it was marked
    client = KubeClient(api, cache=cache)
    with pytest.raises(ConnectionRefusedError):
        asyncio.run(client._call(client.apps.patch_namespaced_deployment, "shop", "shop", {"spec": {}}))
    assert cache.read("deployments", "shop", "shop")[0] is False


@pytest.mark.parametrize("before, after, patch", [
    ({"a": 1, "b": [1, 2]}, {"a": 1, "b": [1, 2]}, {}),
    ({"a": 1}, {"a": 2}, {"a": 2}),
    ({"a": 1, "gone": "x"}, {"a": 1}, {"gone": None}),
    ({"n": {"x": 1, "y": 2}}, {"n": {"x": 1, "y": 3}}, {"n": {"y": 3}}),
    ({"l": [{"t": 1}]}, {"l": [{"t": 1}, {"t": 2}]}, {"l": [{"t": 1}, {"t": 2}]}),
    ({}, {"new": {"deep": True}}, {"new": {"deep": True}}),
    ({"n": 1}, {"n": {"x": 1}}, {"n": {"x": 1}}),
])
def test_a_status_write_sends_only_what_changed(before: dict, after: dict, patch: dict) -> None:
    assert merge_patch(before, after) == patch
    assert apply_merge_patch(before, merge_patch(before, after)) == after


def test_a_namespaces_list_is_read_from_the_watch_until_one_of_its_objects_is_written() -> None:
    cache, services = WatchCache(), {"shop": [deployment("shop", "5")]}
    cache.serve_lists("services", services)
    assert cache.read_list("services", "shop") == (True, [deployment("shop", "5")])
    assert cache.read_list("services", "other") == (True, [])
    cache.touched("services", "shop", "shop")                   # routing pins its selector
    assert cache.read_list("services", "shop") == (False, [])
    assert cache.read_list("services", "other")[0] is True      # another namespace is not in doubt
    cache.settle_list("services", "shop", [deployment("shop", "6")])
    assert cache.read_list("services", "shop")[0] is False      # the watch has not delivered 6 yet
    services["shop"] = [deployment("shop", "6")]
    cache.settle_list("services", "shop", [deployment("shop", "6")])
    assert cache.read_list("services", "shop") == (True, [deployment("shop", "6")])


def test_a_list_from_the_watch_is_in_the_api_servers_order() -> None:
    cache = WatchCache()
    cache.serve_lists("rolloutpolicies", {"": [deployment("b", "2"), deployment("a", "3"), deployment("c", "1")]})
    assert [p["metadata"]["name"] for p in cache.read_list("rolloutpolicies")[1]] == ["a", "b", "c"]


def test_a_copy_of_json_data_is_equal_and_independent_and_anything_else_is_deep_copied() -> None:
    from guarded.kube.patches import json_copy
    obj = {"metadata": {"name": "shop", "labels": {"app": "shop"}}, "spec": {"replicas": 2, "ratio": 0.25,
                                                                              "ports": [{"port": 80}], "x": None}}
    copied = json_copy(obj)
    assert copied == obj
    copied["spec"]["ports"][0]["port"] = 81
    assert obj["spec"]["ports"][0]["port"] == 80
    odd = {"kinds": {"a", "b"}}   # not JSON: deep-copied as before
    other = json_copy(odd)
    assert other == odd and other["kinds"] is not odd["kinds"]


def test_a_peek_is_what_the_watch_saw_neither_copied_nor_counted_and_nothing_before_the_index_is_served() -> None:
    told: list[tuple[str, bool]] = []
    assert WatchCache().peek("deployments", "shop", "shop") is None
    cache, index = WatchCache(observer=lambda resource, hit: told.append((resource, hit))), Index()
    seen = deployment("shop", "10")
    index.put(seen)
    cache.serve("deployments", index)
    cache.touched("deployments", "shop", "shop")   # our write not yet seen: a read would not trust the watch
    assert cache.peek("deployments", "shop", "shop") is seen
    assert cache.peek("deployments", "shop", "other") is None
    assert told == []
