"""The lean diff-base storage builds the very essence kopf's own does, without copying the status."""

from __future__ import annotations

import copy

import kopf

from guarded.handlers.essence import LeanDiffBaseStorage

PREFIX = "rollouts.guarded.dev"


def rollout_body() -> dict:
    return {
        "apiVersion": "rollouts.guarded.dev/v1alpha1", "kind": "GuardedRollout",
        "metadata": {
            "name": "checkout", "namespace": "shop", "uid": "u-1", "resourceVersion": "42", "generation": 3,
            "creationTimestamp": "2026-11-26T10:00:00Z", "finalizers": [f"{PREFIX}/finalizer"],
            "labels": {"team": "payments"},
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{...}",
                f"{PREFIX}/last-handled-configuration": '{"spec":{"target":{"name":"old"}}}\n',
                f"{PREFIX}/reconcile": '{"started":"2026-11-26T10:00:00Z"}',
                "guarded.dev/ai-assisted": "true",
            },
            "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
        },
        "spec": {"target": {"name": "checkout"}, "waves": [{"replicas": 1, "bake": "30s"}, {"weight": 100}],
                 "analysis": {"interval": "2s", "orders": "orders_total"}},
        "status": {"phase": "Progressing", "history": [{"reason": "WaveStarted", "message": "wave 1/2"}] * 50,
                   "analysis": {"recent": [{"verdict": "Pass"}] * 20}},
    }


def test_the_essence_is_kopfs_own_and_the_body_is_left_alone() -> None:
    raw = rollout_body()
    before = copy.deepcopy(raw)
    lean = LeanDiffBaseStorage(prefix=PREFIX).build(body=kopf.Body(raw))
    assert lean == kopf.AnnotationsDiffBaseStorage(prefix=PREFIX).build(body=kopf.Body(raw))
    assert "status" not in lean and lean["spec"]["target"] == {"name": "checkout"}
    assert lean["metadata"]["labels"] == {"team": "payments"}
    assert "kubectl.kubernetes.io/last-applied-configuration" not in lean["metadata"]["annotations"]
    assert raw == before


def test_a_body_without_metadata_or_with_extra_fields_is_built_as_kopf_builds_it() -> None:
    raw = rollout_body()
    del raw["metadata"]
    assert LeanDiffBaseStorage(prefix=PREFIX).build(body=kopf.Body(raw)) == \
        kopf.AnnotationsDiffBaseStorage(prefix=PREFIX).build(body=kopf.Body(raw))
    raw = rollout_body()
    lean = LeanDiffBaseStorage(prefix=PREFIX).build(body=kopf.Body(raw), extra_fields=["status.phase"])
    assert lean["status"] == {"phase": "Progressing"}
    assert lean == kopf.AnnotationsDiffBaseStorage(prefix=PREFIX).build(body=kopf.Body(raw),
                                                                         extra_fields=["status.phase"])
