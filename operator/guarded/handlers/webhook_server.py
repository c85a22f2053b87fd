"""Where the API server is told to reach the admission webhooks: a Service reference in a cluster.

kopf's WebhookServer registers a URL. With the host a Service's cluster DNS name
(`guarded-rollouts-webhook.guarded-rollouts.svc`, as manifests/install and the chart set it), that URL
only works where the API server resolves cluster DNS, which it usually does not: it runs outside the
pod network. A `service` reference (namespace, name, port, path) is what the API server reaches through
its own service proxy, so that is what we register for such a host. Anything else (the test bed's
127.0.0.1, a tunnel's public name) keeps kopf's URL.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import kopf
from kopf._cogs.structs.reviews import WebhookClientConfig, WebhookClientConfigService


def service_of(host: str) -> tuple[str, str] | None:
    """(namespace, name) when `host` is a Service's cluster DNS name, `<name>.<namespace>.svc[.cluster.local]`."""
    parts = host.rstrip(".").split(".")
    if len(parts) in (3, 5) and parts[2] == "svc" and all(parts[:2]) and parts[3:] in ([], ["cluster", "local"]):
        return parts[1], parts[0]
    return None


def as_service(config: WebhookClientConfig, namespace: str, name: str, port: int) -> WebhookClientConfig:
    """The same webhook as a Service reference: kopf appends each handler's id to the path."""
    path = urllib.parse.urlsplit(config.get("url") or "").path.rstrip("/")
    out = WebhookClientConfig(service=WebhookClientConfigService(namespace=namespace, name=name, port=port,
                                                                 path=path))
    if config.get("caBundle"):
        out["caBundle"] = config["caBundle"]
    return out


class ServiceWebhookServer(kopf.WebhookServer):
    """kopf's server, registered as a reference to the Service named by its host."""

    def __init__(self, *, namespace: str, name: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.service_namespace, self.service_name = namespace, name

    async def __call__(self, fn: Any) -> AsyncIterator[WebhookClientConfig]:
        async for config in super().__call__(fn):
            yield as_service(config, self.service_namespace, self.service_name, int(self.port or 443))
