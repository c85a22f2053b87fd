"""Automated checks of a change before wave 1: deterministic rules over the changed pod template. Pure.

The API server's own verdict comes first (the shell dry-runs the canary Deployment server-side and
passes the error, if any, in); these rules then refuse what a server would accept but production
should not run: an image that is not pinned (no tag, or `latest`), a container without resource
requests and limits, a container without a readiness probe (the capacity rule counts Ready pods,
so a pod without a probe is "Ready" before it serves), and a target too small to canary (with one
replica, wave 1 would be the whole service).

Each finding names the rule and the field to fix, so the status condition can say exactly that.
"""

from __future__ import annotations

import re
from typing import Any

from guarded.api.rollout import GuardedRolloutSpec, ValidationFinding

MIN_REPLICAS = 2

_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def image_tag(image: str) -> str | None:
    """The tag of an image reference, or None (a port in the registry host is not a tag)."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def _image_field(spec: GuardedRolloutSpec, container: str, index: int) -> str:
    for i, cc in enumerate(spec.change.containers):
        if cc.name == container and cc.image is not None:
            return f"spec.change.containers[{i}].image"
    if spec.change.pod_template_patch:
        return f"spec.change.podTemplatePatch or the target's spec.template.spec.containers[{index}].image"
    return f"the target's spec.template.spec.containers[{index}].image"


def _image_findings(spec: GuardedRolloutSpec, containers: list[dict[str, Any]], kind: str,
                    first: int = 0) -> list[ValidationFinding]:
    out = []
    for offset, container in enumerate(containers):
        index = first + offset
        name = container.get("name", f"#{index}")
        image = str(container.get("image") or "")
        field = _image_field(spec, name, index) if kind == "containers" else \
            f"the target's spec.template.spec.initContainers[{index}].image"
        tag = image_tag(image)
        if _DIGEST.search(image):
            continue  # a digest pins the image whatever the tag says
        if tag is None:
            out.append(ValidationFinding(
                rule="ImagePinned", field=field,
                message=f"container {name!r}: image {image!r} has no tag or digest; pin it (name:1.2.3 or "
                        "name@sha256:...)"))
        elif tag == "latest":
            out.append(ValidationFinding(
                rule="ImageNotLatest", field=field,
                message=f"container {name!r}: image {image!r} uses the tag 'latest', which names no single "
                        "build; pin a version tag or a digest"))
    return out


def check_template(spec: GuardedRolloutSpec, template: dict[str, Any], *, replicas: int) -> list[ValidationFinding]:
    findings: list[ValidationFinding] = []
    pod = template.get("spec") or {}
    findings += _image_findings(spec, pod.get("initContainers") or [], "initContainers")
    containers = pod.get("containers") or []
    for index, container in enumerate(containers):
        name = container.get("name", f"#{index}")
        where = f"the target's spec.template.spec.containers[{index}]"
        findings += _image_findings(spec, [container], "containers", index)
        resources = container.get("resources") or {}
        for part in ("requests", "limits"):
            if not resources.get(part):
                findings.append(ValidationFinding(
                    rule="ResourcesPresent", field=f"{where}.resources.{part}",
                    message=f"container {name!r} has no resource {part}; set cpu and memory {part}"))
        if not container.get("readinessProbe"):
            findings.append(ValidationFinding(
                rule="ReadinessProbe", field=f"{where}.readinessProbe",
                message=f"container {name!r} has no readinessProbe; without one a pod counts as Ready before "
                        "it serves, and the waves would lower the stable too early"))
    if replicas < MIN_REPLICAS:
        findings.append(ValidationFinding(
            rule="EnoughReplicas", field="spec.target.name",
            message=f"Deployment {spec.target.name!r} has {replicas} replica(s); a canary needs at least "
                    f"{MIN_REPLICAS} so that wave 1 is not the whole service"))
    return findings


def dry_run_finding(error: str) -> ValidationFinding:
    return ValidationFinding(rule="DryRun", field="spec.change",
                             message=f"the API server rejected the changed pod template in a dry run: {error}")
