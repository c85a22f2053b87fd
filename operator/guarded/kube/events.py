"""Kubernetes Events for every transition the core records."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import kubernetes
from kubernetes.client.rest import ApiException

from guarded.core.model import Event
from guarded.kube.client import KubeClient

COMPONENT = "guarded-rollouts"


async def post_events(client: KubeClient, obj: dict[str, Any], events: tuple[Event, ...]) -> None:
    meta = obj["metadata"]
    now = datetime.now(UTC)
    for event in events:
        body = kubernetes.client.CoreV1Event(
            metadata=kubernetes.client.V1ObjectMeta(generate_name=f"{meta['name']}.", namespace=meta["namespace"]),
            involved_object=kubernetes.client.V1ObjectReference(
                api_version=obj["apiVersion"], kind=obj["kind"], name=meta["name"],
                namespace=meta["namespace"], uid=meta.get("uid"), resource_version=meta.get("resourceVersion"),
            ),
            type=event.type, reason=event.reason[:128], message=event.message[:1024],
            first_timestamp=now, last_timestamp=now, count=1,
            source=kubernetes.client.V1EventSource(component=COMPONENT),
            reporting_component=COMPONENT, reporting_instance=COMPONENT,
        )
        try:
            await client._call(client.core.create_namespaced_event, meta["namespace"], body)
        except ApiException:
            # Events are best effort; the same facts are in status.history.
            continue
