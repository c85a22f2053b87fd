"""A tiny, pure model of the Deployment controller for driving the engine in unit tests.

Plain data only (no Kubernetes client, no mocks of its API): Deployments have a spec replica
count and a template; new pods become Ready a configurable number of ticks after they are asked
for; removed pods stop serving at once. That is enough to check the engine's invariants over
thousands of random runs.

The vocabulary of a test, a tick (one second) per step:

    world = World(spec(waves=QUICK))
    world.run_until(stage=Stage.BAKE, wave=1)   # step until there; fails naming what it waited for
    world.ask("abort")                          # as `kubectl guarded abort`: a request with a fresh id
    world.run_for(10)                           # let ten ticks pass
    world.run_until_done()                      # to Succeeded, RolledBack or Failed
"""

from __future__ import annotations

import copy
import inspect
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from guarded.api.rollout import GuardedRolloutSpec, GuardedRolloutStatus
from guarded.core.actions import (
    ApplyCanary,
    ClaimTarget,
    DeleteDeployment,
    EnsureConfigVersion,
    PromoteTarget,
    ReleaseTarget,
    RemoveConfigVersion,
    ScaleDeployment,
)
from guarded.core.analysis import AnalysisObservation, analysis_due
from guarded.core.clock import stamp
from guarded.core.config_refs import content_digest, merged_data, version_name
from guarded.core.engine import Decision, decide
from guarded.core.observations import (
    Claim,
    ConfigObs,
    DeploymentState,
    GuardObservation,
    Observations,
    Request,
    VersionObs,
)
from guarded.core.templates import CLAIM_ANNOTATION, content_hash, parse_claim

T0 = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)


def pod_template(image: str = "shop:1.0.0") -> dict[str, Any]:
    """A template that passes the pre-flight rules: pinned image, resources, readiness probe."""
    return {
        "metadata": {"labels": {"app": "shop"}},
        "spec": {"containers": [{
            "name": "app", "image": image,
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
            "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}},
        }]},
    }


@dataclass
class FakeDeployment:
    name: str
    replicas: int
    template: dict[str, Any]
    selector: dict[str, Any] = field(default_factory=lambda: {"matchLabels": {"app": "shop"}})
    annotations: dict[str, str] = field(default_factory=dict)
    generation: int = 1
    uid: str = ""
    owner_uid: str | None = None
    # Pods: (template hash, tick at which it becomes Ready)
    pods: list[tuple[str, int]] = field(default_factory=list)

    def ready_pods(self, tick: int) -> list[tuple[str, int]]:
        return [p for p in self.pods if p[1] <= tick]


@dataclass
class FakeConfig:
    """A ConfigMap or Secret: its content ({"data": ..., "binaryData": ...}) and who owns it."""

    content: dict[str, Any]
    uid: str
    owners: set[str] = field(default_factory=set)   # rollout uids, and "deployment:<name>"


@dataclass
class World:
    spec: GuardedRolloutSpec
    replicas: int = 10
    ready_delay: int = 1  # ticks for a new pod to become Ready
    jitter: int = 0  # each new pod waits 0..jitter further ticks, drawn from a Random seeded with `seed`
    seed: int = 0
    tick: int = 0
    seconds_per_tick: float = 1.0
    deployments: dict[str, FakeDeployment] = field(default_factory=dict)
    status: GuardedRolloutStatus = field(default_factory=GuardedRolloutStatus)
    generation: int = 1
    request: Request | None = None
    log: list[Decision] = field(default_factory=list)
    # What "Prometheus" returns when an analysis step is due (None: no analysis observations).
    analysis_source: Callable[[World], AnalysisObservation] | None = None
    webhook_alerts: tuple[str, ...] = ()
    # What the pre-flight gates see (policies, approvals, dry run); by default: no policy, dry run passed.
    guard: GuardObservation = field(default_factory=lambda: GuardObservation(dry_run_done=True, created=stamp(T0)))
    requester: str | None = None
    # The inputs of every decision, in order: (spec, status, observations), for replaying it.
    inputs: list[tuple[GuardedRolloutSpec, GuardedRolloutStatus, Observations]] = field(default_factory=list)
    name: str = "release"
    uid: str = "uid-1"
    # Rollouts by uid, shared between Worlds that share `deployments` (two rollouts, one target).
    peers: dict[str, World] = field(default_factory=dict)
    # What the shell refused to do (an ownership check failed), as (action, reason).
    refused: list[tuple[object, str]] = field(default_factory=list)
    deployments_created: int = 0
    requests_sent: int = 0
    # ConfigMaps and Secrets by (kind, name), as the shell would find them.
    configs: dict[tuple[str, str], FakeConfig] = field(default_factory=dict)
    # The copies of templates handed to the engine, by Deployment: (content hash, copy). The engine never
    # changes its inputs (test_engine_properties replays every decision to check), so one copy serves
    # every observation until the template changes; deep-copying it each tick was most of a simulation.
    _copies: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict, repr=False)
    # content_hash by repr(template): a repr costs less than half of a hash, and the
    # same content (key order aside) always has the same hash, so this never changes what is computed.
    _hashes: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.peers[self.uid] = self
        if "shop" not in self.deployments:
            tpl = pod_template()
            h = content_hash(tpl)
            self.deployments["shop"] = FakeDeployment("shop", self.replicas, tpl, uid="uid-shop",
                                                       pods=[(h, 0) for _ in range(self.replicas)])

    @property
    def now(self) -> datetime:
        return T0 + timedelta(seconds=self.tick * self.seconds_per_tick)

    def state(self, name: str) -> DeploymentState | None:
        d = self.deployments.get(name)
        if d is None:
            return None
        h = self.template_hash(d.template)
        current = [p for p in d.pods if p[0] == h]
        ready = d.ready_pods(self.tick)
        cached = self._copies.get(name)
        if cached is None or cached[0] != h:
            cached = self._copies[name] = (h, copy.deepcopy(d.template))
        return DeploymentState(
            name=d.name, generation=d.generation, observed_generation=d.generation, replicas=d.replicas,
            status_replicas=len(d.pods), ready=len(ready), available=len(ready),
            updated=len(current), selector=copy.deepcopy(d.selector), template=cached[1],
            annotations=dict(d.annotations), labels={"app": "shop", "tier": "1"}, uid=d.uid, owner_uid=d.owner_uid,
        )

    def template_hash(self, template: dict[str, Any]) -> str:
        key = repr(template)
        h = self._hashes.get(key)
        if h is None:
            h = self._hashes[key] = content_hash(template)
        return h

    def claim(self) -> Claim | None:
        """The target's claim as the shell resolves it (alive: the holder exists and has not ended)."""
        target = self.deployments.get("shop")
        value = target.annotations.get(CLAIM_ANNOTATION) if target else None
        parsed = parse_claim(value)
        if value is None or parsed is None:
            return None
        holder = self.peers.get(parsed[1])
        alive = holder is not None and holder.status.stage not in ("Succeeded", "RolledBack", "Failed")
        return Claim(value=value, name=parsed[0], uid=parsed[1], alive=alive)

    def observe(self) -> Observations:
        analysis = None
        if self.analysis_source is not None and analysis_due(self.spec, self.status, self.now):
            analysis = self.analysis_source(self)
        return Observations(now=self.now, namespace="shop", name=self.name, uid=self.uid,
                            generation=self.generation, target=self.state("shop"),
                            canary=self.state("shop-canary"), request=self.request,
                            analysis=analysis, webhook_alerts=self.webhook_alerts, guard=self.guard,
                            requester=self.requester, claim=self.claim(), config=self.config_obs(),
                            config_versions=self.version_obs())

    def config_obs(self) -> tuple[ConfigObs, ...]:
        """spec.change's configuration resolved as kube/config.observe does."""
        out = []
        for kind, changes in (("ConfigMap", self.spec.change.config_maps), ("Secret", self.spec.change.secrets)):
            for c in changes:
                source = self.configs.get((kind, c.name))
                origin = self.configs.get((kind, c.content_from)) if c.content_from else source
                if source is None or origin is None:
                    missing = c.content_from or c.name
                    out.append(ConfigObs(kind=kind, name=c.name, error=f"{kind} {missing!r} not found"))
                    continue
                content = dict(origin.content)
                if getattr(c, "data", None) is not None:
                    content = {**content, "data": merged_data(content.get("data") or {}, c.data, c.remove_keys)}
                digest = content_digest(content.get("data"), content.get("binaryData"))
                out.append(ConfigObs(kind=kind, name=c.name, version=version_name(c.name, digest),
                                     content=content if kind == "ConfigMap" else None))
        return tuple(out)

    def version_obs(self) -> tuple[VersionObs, ...]:
        wanted = {(c.kind, c.version) for c in self.config_obs() if c.version}
        wanted |= {(c.kind, c.version) for c in self.status.config}
        out = []
        for kind, version in sorted(wanted):
            obj = self.configs.get((kind, version))
            out.append(VersionObs(kind=kind, version=version) if obj is None else VersionObs(
                kind=kind, version=version, exists=True, uid=obj.uid, ours=self.uid in obj.owners,
                adopted=any(o.startswith("deployment:") for o in obj.owners)))
        return tuple(out)

    def decide(self) -> Decision:
        return decide(self.spec, self.status, self.observe())

    def apply(self, decision: Decision) -> None:
        """Carry out the actions with the shell's ownership checks (kube/act.py): the first refused
        action stops the rest, as NotOwned does there."""
        for action in decision.actions:
            reason = self.refusal(action)
            if reason is not None:
                self.refused.append((action, reason))
                return
            self.carry_out(action)

    def refusal(self, action: object) -> str | None:
        target = self.deployments.get("shop")
        holder = parse_claim(target.annotations.get(CLAIM_ANNOTATION)) if target else None
        if isinstance(action, ApplyCanary):
            d = self.deployments.get(action.manifest["metadata"]["name"])
            owner = action.manifest["metadata"]["ownerReferences"][0]["uid"]
            if d is not None and d.owner_uid != owner:
                return "canary not owned"
        elif isinstance(action, ScaleDeployment | PromoteTarget):
            if holder is None or holder[1] != action.rollout_uid:
                return "target not claimed by this rollout"
        elif isinstance(action, DeleteDeployment):
            d = self.deployments.get(action.name)
            if d is not None and d.uid != action.uid:
                return "uid precondition failed"
        elif isinstance(action, ClaimTarget) and target is not None:
            seen = target.annotations.get(CLAIM_ANNOTATION)
            if seen not in (action.expected, action.value):
                return "claimed meanwhile"
        return None

    def carry_out(self, action: object) -> None:
        if isinstance(action, ApplyCanary):
            m = action.manifest
            name = m["metadata"]["name"]
            d = self.deployments.get(name)
            if d is None:
                self.deployments_created += 1
                d = FakeDeployment(name, 0, m["spec"]["template"], selector=m["spec"]["selector"],
                                   uid=f"{name}-{self.deployments_created}-{self.uid}",
                                   owner_uid=m["metadata"]["ownerReferences"][0]["uid"])
                self.deployments[name] = d
            if d.template != m["spec"]["template"]:
                d.template = copy.deepcopy(m["spec"]["template"])
                d.generation += 1
            d.annotations = dict(m["metadata"]["annotations"])
            if d.replicas != action.replicas:
                d.replicas = action.replicas
                d.generation += 1
        elif isinstance(action, ScaleDeployment):
            d = self.deployments[action.name]
            if d.replicas != action.replicas:
                d.replicas = action.replicas
                d.generation += 1
        elif isinstance(action, DeleteDeployment):
            self.deployments.pop(action.name, None)
        elif isinstance(action, PromoteTarget):
            d = self.deployments[action.name]
            for ref in action.config:   # adopted by the target, then its source shows the promoted content
                self.configs[(ref.kind, ref.version)].owners.add(f"deployment:{action.name}")
                self.configs[(ref.kind, ref.name)].content = dict(self.configs[(ref.kind, ref.version)].content)
            d.template = copy.deepcopy(action.template)
            d.replicas = action.replicas
            d.generation += 1
        elif isinstance(action, ClaimTarget):
            self.deployments[action.name].annotations[CLAIM_ANNOTATION] = action.value
        elif isinstance(action, EnsureConfigVersion | RemoveConfigVersion):
            self.carry_out_config(action)
        elif isinstance(action, ReleaseTarget):
            annotations = self.deployments[action.name].annotations
            if annotations.get(CLAIM_ANNOTATION) == action.value:
                del annotations[CLAIM_ANNOTATION]

    def carry_out_config(self, action: EnsureConfigVersion | RemoveConfigVersion) -> None:
        key = (action.kind, action.version)
        obj = self.configs.get(key)
        if isinstance(action, RemoveConfigVersion):
            if obj is not None and obj.uid == action.uid and action.rollout_uid in obj.owners \
                    and not any(o.startswith("deployment:") for o in obj.owners):
                del self.configs[key]
            return
        if obj is not None:
            obj.owners.add(action.rollout_uid or "")
            return
        if action.content is not None:
            content = dict(action.content)
        else:
            content = dict(self.configs[(action.kind, action.copy_from or "")].content)
        self.configs[key] = FakeConfig(content=content, uid=f"uid-{action.version}", owners={action.rollout_uid or ""})

    def controllers(self) -> None:
        """One tick of the Deployment controller: reach spec replicas of the current template.

        Rolling update with maxSurge 1 / maxUnavailable 0: old pods go only once a new one is Ready.
        """
        for d in self.deployments.values():
            h = self.template_hash(d.template)
            current = [p for p in d.pods if p[0] == h]
            old = [p for p in d.pods if p[0] != h]
            if len(current) < d.replicas:
                delay = self.ready_delay + (self.rng.randint(0, self.jitter) if self.jitter else 0)
                current.append((h, self.tick + delay))
            elif len(current) > d.replicas:
                current = sorted(current, key=lambda p: p[1])[: d.replicas]
            ready_new = [p for p in current if p[1] <= self.tick]
            ready_old = [p for p in old if p[1] <= self.tick]
            surplus = len(ready_new) + len(ready_old) > d.replicas
            rolled = len(current) >= d.replicas and len(ready_new) == len(current)
            if old and (surplus or rolled):
                old = old[1:]
            d.pods = old + current

    def step(self, *, persist: bool = True) -> Decision:
        """decide, act, and (unless the operator 'crashes' before writing status) persist status."""
        obs = self.observe()
        self.inputs.append((self.spec, self.status, obs))
        decision = decide(self.spec, self.status, obs)
        self.log.append(decision)
        self.enact(decision, persist=persist)
        return decision

    def enact(self, decision: Decision, *, persist: bool = True) -> None:
        """Carry out a decision (one made here, or elsewhere: a fail-safe one), write its status unless the
        operator 'crashes' first, and let a tick pass."""
        self.apply(decision)
        if persist:
            self.status = decision.status
        self.tick += 1
        self.controllers()

    def serving(self) -> tuple[int, int]:
        """Ready pods of (canary, stable)."""
        canary = self.deployments.get("shop-canary")
        stable = self.deployments["shop"]
        return (len(canary.ready_pods(self.tick)) if canary else 0, len(stable.ready_pods(self.tick)))

    # -- the vocabulary of the tests ------------------------------------------------------------------

    def ask(self, action: str, *, by: str | None = None) -> Request:
        """Ask for `action` as `kubectl guarded <action>` does: a request with a fresh id, and (as admission
        stamps it) who asked, if `by` is given. The request stays, as the annotation does, until replaced."""
        self.requests_sent += 1
        self.request = Request(id=f"{action}-{self.requests_sent}", action=action)
        if by is not None:
            self.requester = by
        return self.request

    def run_for(self, ticks: int, *, each: Callable[[World, Decision], None] | None = None) -> Decision | None:
        """Let `ticks` ticks pass, a decision each; `each(world, decision)` checks every one of them."""
        decision = None
        for _ in range(ticks):
            decision = self.step()
            if each is not None:
                each(self, decision)
        return decision

    def idle(self, ticks: int) -> None:
        """Let `ticks` ticks pass with no decision (the operator asleep); the Deployment controller runs."""
        for _ in range(ticks):
            self.tick += 1
            self.controllers()

    def run_until(self, *, stage: str | None = None, wave: int | None = None, phase: str | None = None,
                  predicate: Callable[[World], bool] | None = None, limit: int = 300,
                  each: Callable[[World, Decision], None] | None = None) -> Decision | None:
        """Step until the written status is at `stage`, `wave` and `phase` and `predicate(world)` holds (those
        given); no step at all if it already is. `each(world, decision)` checks every step on the way.

        Returns the last decision (None if no step was needed); fails after `limit` steps, naming what it
        waited for and where the rollout is instead."""
        wanted = {k: v for k, v in (("stage", stage), ("wave", wave), ("phase", phase)) if v is not None}
        if not wanted and predicate is None:
            raise TypeError("run_until() needs a stage, wave, phase or predicate to wait for")

        def reached() -> bool:
            return (all(getattr(self.status, k) == v for k, v in wanted.items())
                    and (predicate is None or predicate(self)))

        decision = None
        for _ in range(limit):
            if reached():
                return decision
            decision = self.step()
            if each is not None:
                each(self, decision)
        if reached():
            return decision
        s = self.status
        waited = [f"{k} {v}" for k, v in wanted.items()] + ([_describe(predicate)] if predicate else [])
        raise AssertionError(f"waited {limit} ticks for {' and '.join(waited)}; at tick {self.tick} the rollout "
                             f"is at stage {s.stage}, wave {s.wave}, phase {s.phase}: {s.message!r}")

    def run_until_done(self, limit: int = 2000) -> Decision:
        """Step (at least once: a rollout asked to retry still reads RolledBack until it is decided) until the
        rollout has ended: Succeeded, RolledBack or Failed."""
        first = self.step()
        return self.run_until(predicate=done, limit=limit - 1) or first


def done(world: World) -> bool:
    """the rollout has ended (Succeeded, RolledBack or Failed)"""
    return world.status.stage in ("Succeeded", "RolledBack", "Failed")


def _describe(predicate: Callable[[World], bool]) -> str:
    """A predicate as a failure message names it: its docstring, its name, or a lambda's source."""
    if predicate.__doc__:
        return predicate.__doc__.strip()
    if predicate.__name__ != "<lambda>":
        return predicate.__name__
    try:
        return inspect.getsource(predicate).strip()
    except (OSError, TypeError):
        return "a predicate"
