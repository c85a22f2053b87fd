"""How the operator and kopf reach the API server, and kopf's settings: credentials from a kubeconfig or the
pod's ServiceAccount, for the operator's client and for kopf, which talks through a session of ours."""

from __future__ import annotations

import logging
import os
from typing import Any

import aiohttp
import kopf
import kubernetes

from guarded.api.common import GROUP
from guarded.handlers.essence import LeanDiffBaseStorage


def kube_configuration() -> kubernetes.client.Configuration:
    cfg = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=cfg)
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(context=os.environ.get("GUARDED_KUBE_CONTEXT") or None,
                                           client_configuration=cfg)
    # As many connections as I/O threads (kube/client): the default (5 per CPU) dropped and reopened TLS
    # connections by the thousand at N = 335 (issue 11), work for the API server.
    cfg.connection_pool_maxsize = 32
    return cfg


def bearer_token(cfg: kubernetes.client.Configuration) -> str | None:
    """The token alone, for kopf: a kubeconfig's comes as "Bearer <token>", the in-cluster loader's as
    "bearer <token>" (lowercase), and kopf adds the scheme itself."""
    auth = (cfg.api_key.get("authorization") or cfg.api_key.get("BearerToken") or "").strip()
    scheme, _, token = auth.partition(" ")
    return (token.strip() if scheme.lower() == "bearer" else auth) or None


def connection_info() -> kopf.ConnectionInfo:
    cfg = kube_configuration()
    token = bearer_token(cfg)
    return kopf.ConnectionInfo(
        server=cfg.host, ca_path=cfg.ssl_ca_cert, insecure=not cfg.verify_ssl, token=token,
        certificate_path=cfg.cert_file, private_key_path=cfg.key_file,
    )


# kopf's own connections to the API server (its watches, its patches of finalizers and annotations, its
# Events) at most: kopf's session opens one per request in flight, without a limit. At N = 1,000 rollouts, when
# kopf's indexes were ready and every rollout's first patch went out at once, it opened about a thousand TLS
# connections in a second: 70 MiB of the operator's memory (their TLS state), and the peak of the whole run
# (issue 11). Requests beyond the limit wait for a connection. Each watch holds one for its life: a
# namespaced operator watches every kind once per namespace, so each namespace adds WATCHES_PER_NAMESPACE.
KOPF_CONNECTIONS = 64
WATCHES_PER_NAMESPACE = 16


def kopf_connection_limit(namespaces: int) -> int:
    return KOPF_CONNECTIONS + WATCHES_PER_NAMESPACE * namespaces


@kopf.on.login()
async def login(**_: Any) -> kopf.AiohttpSession:
    """kopf's credentials as the kubernetes client reads them (kubeconfig or in-cluster), in a session of our
    own: kopf's would open as many connections as it has requests in flight."""
    info = connection_info()
    namespaces = [ns for ns in os.environ.get("GUARDED_WATCHED_NAMESPACES", "").split(",") if ns]
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=kopf_connection_limit(len(namespaces)), ssl=info.as_ssl_context()),
        headers=info.as_http_headers())
    return kopf.AiohttpSession(server=info.server, aiohttp_session=session)


# Objects per page of a watch's initial listing (and of a relisting after the watch expired). kopf reads a
# listing whole by default: with 1,000 rollouts' namespaces, deployments, services and 3,000 pods that is
# tens of MB of JSON decoded at once, with every object's managedFields, at the operator's start (issue 11).
# A page is handled before the next is asked for; the listing stays one consistent snapshot.
LIST_CHUNK = 200


def tune(settings: kopf.OperatorSettings) -> None:
    """kopf's settings for this operator."""
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = LeanDiffBaseStorage(prefix=GROUP)
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 120
    # A partition (no byte moves, nothing refused) must not hang a watch or one of kopf's own requests for
    # long: the whole watch is given up on a while after the API server should have ended it, and kopf's
    # patches and events time out as the operator's own requests do (kube/client.REQUEST_TIMEOUT).
    settings.watching.client_timeout = 150
    settings.watching.connect_timeout = 10
    settings.networking.connect_timeout = 10
    settings.networking.request_timeout = 60
    settings.peering.name = "guarded-rollouts"
    settings.watching.chunk_size = LIST_CHUNK
