"""Notifications: deliver what core.notifications reads off a persisted decision, never in a decision's way.

The reconcile calls `submit` once, after its status write succeeded (the write is the claim: see the core
module's docstring). `submit` returns at once; delivery is an asyncio task the reconcile never awaits,
with a timeout on every request and a bounded number of attempts with exponential backoff. A sink that is
down, slow or hanging therefore delays no decision, and costs at most ATTEMPTS requests per message.

Sinks come from two places: the operator's own (environment, set by the platform team in the Deployment,
typically from a Secret with `valueFrom.secretKeyRef`, so no URL shows in `ps` or in a manifest), and
`spec.notifications` of the RolloutPolicies that govern the rollout (status.policy.policies), whose URLs
are read from Secrets in the operator's namespace when a message is sent. URLs are credentials: they are
never logged (a sink is named by its name) and never put in status or Events.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client import Counter

from guarded import logs
from guarded.api.common import GROUP, VERSION
from guarded.api.policy import NOTIFY_EVENTS, POLICY_PLURAL, RolloutPolicySpec
from guarded.api.rollout import GuardedRolloutStatus
from guarded.core.notifications import Notification, of_decision, slack_body, wanted, webhook_body
from guarded.handlers.telemetry import PREFIX, TELEMETRY
from guarded.kube.client import KubeClient

ATTEMPTS = 5              # per message and sink: the first try and four retries
FIRST_BACKOFF = 1.0       # seconds before the first retry, doubled each time (1, 2, 4, 8)
MAX_BACKOFF = 30.0
REQUEST_TIMEOUT = 5.0     # a whole request (connect, send, answer): a hanging sink is given up on (default)
MAX_PENDING = 256         # deliveries under way at once; beyond, a decision's messages are dropped (and counted)
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
DEFAULT_NAMESPACE = "guarded-rollouts"

SENT = Counter(f"{PREFIX}_notifications", "Notifications by sink, event and result (sent, failed: every "
               "attempt failed, dropped: the sink refused it or could not be resolved).",
               ("sink", "event", "result"), registry=TELEMETRY.registry)


@dataclass(frozen=True)
class Sink:
    name: str
    type: str                  # slack | webhook
    url: str
    events: tuple[str, ...] = ()


def _urls(value: str) -> list[str]:
    return [u for u in value.replace(",", " ").split() if u]


def operator_sinks(environ: Mapping[str, str]) -> tuple[Sink, ...]:
    """The operator-wide sinks: GUARDED_NOTIFY_SLACK_URL and GUARDED_NOTIFY_WEBHOOK_URL (each one URL or
    several, separated by spaces or commas), told GUARDED_NOTIFY_EVENTS (comma-separated; empty: all)."""
    events = tuple(e.strip() for e in environ.get("GUARDED_NOTIFY_EVENTS", "").split(",") if e.strip())
    unknown = [e for e in events if e not in NOTIFY_EVENTS]
    if unknown:
        raise ValueError(f"GUARDED_NOTIFY_EVENTS: unknown {', '.join(unknown)}; known: {', '.join(NOTIFY_EVENTS)}")
    sinks: list[Sink] = []
    for kind, var in (("slack", "GUARDED_NOTIFY_SLACK_URL"), ("webhook", "GUARDED_NOTIFY_WEBHOOK_URL")):
        for i, url in enumerate(_urls(environ.get(var, ""))):
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{var}: a URL must start with http:// or https:// (entry {i + 1})")
            sinks.append(Sink(name=f"operator-{kind}-{i + 1}", type=kind, url=url, events=events))
    return tuple(sinks)


def operator_namespace(environ: Mapping[str, str]) -> str:
    """Where the Secrets that policies' sinks name live: GUARDED_NOTIFY_NAMESPACE, else the pod's own."""
    if environ.get("GUARDED_NOTIFY_NAMESPACE"):
        return environ["GUARDED_NOTIFY_NAMESPACE"]
    with contextlib.suppress(OSError):
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or DEFAULT_NAMESPACE
    return DEFAULT_NAMESPACE


def body_for(sink: Sink, note: Notification) -> dict[str, Any]:
    return slack_body(note) if sink.type == "slack" else webhook_body(note)


class Notifier:
    def __init__(self, sinks: Sequence[Sink] = (), namespace: str = DEFAULT_NAMESPACE,
                 client: KubeClient | None = None, timeout: float = REQUEST_TIMEOUT) -> None:
        self.sinks, self.namespace, self.client, self.timeout = tuple(sinks), namespace, client, timeout
        self._tasks: set[asyncio.Task[None]] = set()  # kept referenced until they end

    def configure(self, *, sinks: Sequence[Sink], namespace: str, client: KubeClient, timeout: float) -> None:
        self.sinks, self.namespace, self.client, self.timeout = tuple(sinks), namespace, client, timeout

    def submit(self, *, namespace: str, name: str, target: str, before: GuardedRolloutStatus,
               after: GuardedRolloutStatus) -> tuple[Notification, ...]:
        """Start delivering the notifications of a persisted decision; returns at once with them. Never
        raises: the decision is already written, and a fault here must not make the reconcile fail safe."""
        try:
            return self._submit(namespace=namespace, name=name, target=target, before=before, after=after)
        except Exception as exc:
            logs.logger(rollout=name, namespace=namespace, wave=getattr(after, "wave_progress", None)).exception(
                "notifications not sent", error=str(exc)[:300])
            return ()

    def _submit(self, *, namespace: str, name: str, target: str, before: GuardedRolloutStatus,
                after: GuardedRolloutStatus) -> tuple[Notification, ...]:
        notes = of_decision(namespace=namespace, name=name, target=target, before=before, after=after)
        policies = tuple(after.policy.policies) if after.policy else ()
        if notes and (self.sinks or (policies and self.client is not None)):
            if len(self._tasks) >= MAX_PENDING:
                # Sinks that hang for hours with many rollouts moving must not grow memory without bound;
                # status, Events and the history keep every transition regardless.
                for note in notes:
                    SENT.labels("*", note.event, "dropped").inc()
                logs.logger(rollout=name, namespace=namespace, wave=after.wave_progress).warning(
                    "notifications dropped: too many deliveries under way", pending=len(self._tasks),
                    notifications=[n.event for n in notes])
                return notes
            task = asyncio.get_running_loop().create_task(self._deliver(notes, policies))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return notes

    async def drain(self) -> None:
        """Wait for the deliveries under way (tests; shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _deliver(self, notes: tuple[Notification, ...], policies: tuple[str, ...]) -> None:
        first = notes[0]
        log = logs.logger(rollout=first.rollout, namespace=first.namespace, wave=first.wave)
        sinks = self.sinks + await self._policy_sinks(policies, log)
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            # Sinks in parallel (one slow sink holds back no other); one sink's messages in order.
            await asyncio.gather(*(self._to_sink(session, sink, notes, log) for sink in sinks))

    async def _to_sink(self, session: aiohttp.ClientSession, sink: Sink, notes: Sequence[Notification],
                       log: Any) -> None:
        try:
            for note in notes:
                if wanted(note, sink.events):
                    await self._send(session, sink, note, log)
        except Exception as exc:  # a fault here must not end the other sinks' deliveries
            log.exception("notification failed", sink=sink.name, error=_without_url(str(exc), sink))

    async def _send(self, session: aiohttp.ClientSession, sink: Sink, note: Notification, log: Any) -> None:
        body, delay, error = body_for(sink, note), FIRST_BACKOFF, ""
        for attempt in range(1, ATTEMPTS + 1):
            try:
                async with session.post(sink.url, json=body) as resp:
                    if resp.status < 300:
                        SENT.labels(sink.name, note.event, "sent").inc()
                        log.info("notified", sink=sink.name, notification=note.event, attempt=attempt)
                        return
                    error = f"HTTP {resp.status}"
                    if 400 <= resp.status < 500 and resp.status not in (408, 429):
                        break  # refused (a revoked webhook, a bad body): asking again changes nothing
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if attempt < ATTEMPTS:
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
        SENT.labels(sink.name, note.event, "failed").inc()
        log.warning("notification not delivered", sink=sink.name, notification=note.event,
                    error=_without_url(error, sink))

    async def _policy_sinks(self, policies: Sequence[str], log: Any) -> tuple[Sink, ...]:
        """The sinks of the governing policies, their URLs read from Secrets now (a rotated URL takes effect
        with the next message). One that cannot be resolved is skipped and logged, not retried."""
        if self.client is None:
            return ()
        sinks: list[Sink] = []
        for policy in policies:
            try:
                obj = await self.client._get_json(self.client.custom.get_cluster_custom_object, GROUP, VERSION,
                                                  POLICY_PLURAL, policy)
                spec = RolloutPolicySpec.model_validate((obj or {}).get("spec") or {})
            except Exception as exc:  # a policy we cannot read sends nothing
                log.warning("notification sinks of a policy not read", policy=policy, error=str(exc)[:200])
                continue
            for s in spec.notifications:
                name = f"{policy}/{s.name}"
                ref = s.url_from.secret_key_ref
                url = await self._secret_value(ref.name, ref.key, name, log)
                if url is not None:
                    sinks.append(Sink(name=name, type=s.type, url=url, events=tuple(s.events)))
        return tuple(sinks)

    async def _secret_value(self, secret: str, key: str, sink: str, log: Any) -> str | None:
        assert self.client is not None
        try:
            obj = await self.client._get_json(self.client.core.read_namespaced_secret, secret, self.namespace)
        except Exception as exc:  # forbidden, unreachable: this sink is skipped
            log.warning("notification sink's Secret not read", sink=sink, secret=f"{self.namespace}/{secret}",
                        error=str(exc)[:200])
            return None
        raw = ((obj or {}).get("data") or {}).get(key)
        url = base64.b64decode(raw).decode(errors="replace").strip() if raw else ""
        if not url.startswith(("http://", "https://")):
            SENT.labels(sink, "-", "dropped").inc()
            log.warning("notification sink has no URL", sink=sink, secret=f"{self.namespace}/{secret}", key=key,
                        why="Secret or key missing" if not url else "not an http(s) URL")
            return None
        return url


def _without_url(error: str, sink: Sink) -> str:
    """aiohttp names the URL in some errors; a Slack webhook URL is a credential."""
    return error.replace(sink.url, f"<{sink.name} URL>")[:300]


NOTIFIER = Notifier()
submit = NOTIFIER.submit


def configure(client: KubeClient, environ: Mapping[str, str] | None = None) -> tuple[Sink, ...]:
    """At startup, from the environment: the operator-wide sinks, the Secrets' namespace, the timeout of one
    request (GUARDED_NOTIFY_TIMEOUT, seconds)."""
    env = os.environ if environ is None else environ
    sinks = operator_sinks(env)
    try:
        timeout = float(env.get("GUARDED_NOTIFY_TIMEOUT") or REQUEST_TIMEOUT)
    except ValueError:
        raise ValueError(f"GUARDED_NOTIFY_TIMEOUT: seconds, not {env['GUARDED_NOTIFY_TIMEOUT']!r}") from None
    if not 0 < timeout <= 600:
        raise ValueError(f"GUARDED_NOTIFY_TIMEOUT: between 0 and 600 seconds, not {timeout}")
    NOTIFIER.configure(sinks=sinks, namespace=operator_namespace(env), client=client, timeout=timeout)
    return sinks
