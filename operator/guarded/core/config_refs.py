"""Names and references of versioned configuration (see core/config.py): pure rules on names and pod templates."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from guarded.api.common import GROUP
from guarded.core.templates import MANAGED_BY, MANAGED_BY_LABEL, content_hash

CONFIG_OF_LABEL = f"{GROUP}/config-of"       # on a version: the ConfigMap or Secret it is a version of
DIGEST_LENGTH = 10
_NAME_ROOM = 253 - DIGEST_LENGTH - 1

Key = tuple[str, str]   # (kind, name): ("ConfigMap", "shop-config")


def content_digest(data: Mapping[str, str] | None, binary_data: Mapping[str, str] | None = None) -> str:
    """The content hash that names a version (the same content always names the same copy)."""
    return content_hash({"data": dict(data or {}), "binaryData": dict(binary_data or {})})[:DIGEST_LENGTH]


def content_of(kind: str, obj: Mapping[str, Any] | None) -> dict[str, Any]:
    """What rides the waves and what a version copies: data and binaryData of a ConfigMap, data of a Secret."""
    obj = obj or {}
    if kind == "Secret":
        return {"data": dict(obj.get("data") or {})}
    return {"data": dict(obj.get("data") or {}), "binaryData": dict(obj.get("binaryData") or {})}


def digest_of(content: Mapping[str, Any]) -> str:
    """The content hash of `content_of(...)`."""
    return content_digest(content.get("data"), content.get("binaryData"))


def version_name(name: str, digest: str) -> str:
    return f"{name[:_NAME_ROOM]}-{digest}"


def is_version_of(ref: str, name: str) -> bool:
    """`ref` is `name` itself or one of its versions."""
    return ref == name or re.fullmatch(re.escape(name[:_NAME_ROOM]) + rf"-[0-9a-f]{{{DIGEST_LENGTH}}}", ref) is not None


def config_label(name: str) -> str:
    """The config-of label's value for `name` (label values are at most 63 characters)."""
    return name if len(name) <= 63 else f"{name[:52]}-{content_hash(name)[:10]}"


def version_labels(name: str) -> dict[str, str]:
    """The labels of a version of `name`: what it is a version of, and who manages it."""
    return {CONFIG_OF_LABEL: config_label(name), MANAGED_BY_LABEL: MANAGED_BY}


def is_version_of_labelled(labels: Mapping[str, str] | None, name: str) -> bool:
    return (labels or {}).get(CONFIG_OF_LABEL) == config_label(name)


def source_of(ref: str) -> str:
    """The object a version is of (`shop-config-0123456789` -> `shop-config`); any other name itself."""
    match = re.fullmatch(rf"(.+)-[0-9a-f]{{{DIGEST_LENGTH}}}", ref)
    return match.group(1) if match else ref


def merged_data(current: Mapping[str, str], set_keys: Mapping[str, str], remove: list[str]) -> dict[str, str]:
    out = {k: v for k, v in current.items() if k not in remove}
    out.update(set_keys)
    return out


# -- references in a pod template ------------------------------------------------------------------

def _ref_slots(template: dict[str, Any]) -> list[tuple[str, dict[str, Any], str]]:
    """(kind, the dict holding the name, the key of the name) of every ConfigMap and Secret reference."""
    spec = template.get("spec") or {}
    slots: list[tuple[str, dict[str, Any], str]] = []
    for volume in spec.get("volumes") or []:
        if isinstance(volume.get("configMap"), dict):
            slots.append(("ConfigMap", volume["configMap"], "name"))
        if isinstance(volume.get("secret"), dict):
            slots.append(("Secret", volume["secret"], "secretName"))
        for source in (volume.get("projected") or {}).get("sources") or []:
            if isinstance(source.get("configMap"), dict):
                slots.append(("ConfigMap", source["configMap"], "name"))
            if isinstance(source.get("secret"), dict):
                slots.append(("Secret", source["secret"], "name"))
    for container in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
        for env_from in container.get("envFrom") or []:
            if isinstance(env_from.get("configMapRef"), dict):
                slots.append(("ConfigMap", env_from["configMapRef"], "name"))
            if isinstance(env_from.get("secretRef"), dict):
                slots.append(("Secret", env_from["secretRef"], "name"))
        for env in container.get("env") or []:
            source = env.get("valueFrom") or {}
            if isinstance(source.get("configMapKeyRef"), dict):
                slots.append(("ConfigMap", source["configMapKeyRef"], "name"))
            if isinstance(source.get("secretKeyRef"), dict):
                slots.append(("Secret", source["secretKeyRef"], "name"))
    return slots


def references(template: Mapping[str, Any]) -> set[Key]:
    """Every (kind, name) a pod template reads."""
    return {(kind, str(holder[key])) for kind, holder, key in _ref_slots(dict(template)) if holder.get(key)}


def reads(template: Mapping[str, Any], kind: str, name: str) -> bool:
    """The template reads the object or one of its versions."""
    return any(k == kind and is_version_of(ref, name) for k, ref in references(template))


def rewrite(template: dict[str, Any], versions: Mapping[Key, str]) -> dict[str, Any]:
    """The template with every reference to a changed object (or to an older version of it) pointing at
    the version to roll out."""
    if not versions:
        return template
    out = copy.deepcopy(template)
    for kind, holder, key in _ref_slots(out):
        for (vkind, name), version in versions.items():
            if vkind == kind and isinstance(holder.get(key), str) and is_version_of(holder[key], name):
                holder[key] = version
    return out
