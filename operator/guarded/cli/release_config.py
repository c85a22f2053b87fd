"""`kubectl guarded release --config/--secret`: the configuration part of a release.

`--config NAME` and `--secret NAME` each open a group that the `--from-file [KEY=]PATH`, `--from-literal
KEY=VALUE` and `--remove-key KEY` flags after them fill (parser.ConfigFlags, in command-line order).

A ConfigMap's group becomes `spec.change.configMaps[] {name, data, removeKeys}`: the operator keeps the
ConfigMap's other keys. A Secret's values never enter the GuardedRollout: the plugin reads the Secret as the
user, sets and removes the keys, and makes the result an immutable Secret named as the operator names a
version (`<name>-<content hash>`, core/config_refs.py), which `spec.change.secrets[] {name, contentFrom}`
names; the operator then finds its version made and reuses it. Values are never printed: only names and keys.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from guarded.cli.errors import CliError
from guarded.cli.parser import ConfigFlags
from guarded.cli.release import ReleaseError
from guarded.core.config_refs import (
    CONFIG_OF_LABEL,
    content_digest,
    is_version_of_labelled,
    merged_data,
    version_labels,
    version_name,
)

KEY = re.compile(r"^[-._a-zA-Z0-9]+$")   # a ConfigMap or Secret key, as the API server validates it
FLAG = {"ConfigMap": "--config", "Secret": "--secret"}


class SecretApi(Protocol):
    """What the plugin's connection (kube.Kube) offers for Secrets, read and created as the user."""

    def get_secret(self, namespace: str, name: str) -> tuple[dict[str, Any] | None, str]: ...

    def create_secret(self, namespace: str, body: dict[str, Any], dry_run: bool = False) -> None: ...


@dataclass(frozen=True)
class ConfigEdit:
    """One --config/--secret group, parsed: the keys set (a Secret's base64-encoded) and removed."""

    kind: str
    name: str
    data: dict[str, str] = field(default_factory=dict)
    remove: tuple[str, ...] = ()

    @property
    def flag(self) -> str:
        return f"{FLAG[self.kind]} {self.name}"


@dataclass(frozen=True)
class SecretVersion:
    """The immutable Secret a --secret release reads: its body (with the values: never print it), whether an
    identical one exists already, and the keys the flags set and removed (for the output)."""

    name: str
    version: str
    body: dict[str, Any]
    exists: bool
    keys: tuple[str, ...]
    removed: tuple[str, ...]


def read_file(path: str) -> bytes:
    with open(os.path.expanduser(path), "rb") as f:
        return f.read()


def check_key(flag: str, value: str, key: str) -> str:
    if not KEY.fullmatch(key) or len(key) > 253 or key in (".", "..") or key.startswith(".."):
        raise ReleaseError(f"{flag} {value!r}: {key!r} is not a valid key (letters, digits, '-', '_' and '.', "
                           "matching ^[-._a-zA-Z0-9]+$, not '.' or starting with '..')")
    return key


def _source(kind: str, flag: str, value: str, read: Callable[[str], bytes]) -> tuple[str, str]:
    """(key, value) of one --from-file or --from-literal; a Secret's value base64-encoded."""
    if flag == "--from-literal":
        key, sep, text = value.partition("=")
        if not sep or not key:
            raise ReleaseError(f"--from-literal {value!r}: write KEY=VALUE (e.g. LOG_LEVEL=debug)")
        raw = text.encode()
    else:
        key, sep, path = value.partition("=") if "=" in value else ("", "", value)
        if sep and (not key or not path):
            raise ReleaseError(f"--from-file {value!r}: write PATH or KEY=PATH (e.g. settings.json or "
                               "app.json=./settings.json)")
        key = key or os.path.basename(path.rstrip("/"))
        try:
            raw = read(path)
        except OSError as exc:
            raise ReleaseError(f"--from-file {value!r}: cannot read {path}: {exc.strerror or exc}") from None
    check_key(flag, value, key)
    if kind == "Secret":
        return key, base64.b64encode(raw).decode()
    try:
        return key, raw.decode()
    except UnicodeDecodeError:
        raise ReleaseError(f"{flag} {value!r}: not UTF-8 text; a ConfigMap's data holds text") from None


def parse_group(group: ConfigFlags, read: Callable[[str], bytes] = read_file) -> ConfigEdit:
    """The keys one --config/--secret group sets and removes; files are read here."""
    data: dict[str, str] = {}
    for flag, value in group.sources:
        key, text = _source(group.kind, flag, value, read)
        if key in data:
            raise ReleaseError(f"{FLAG[group.kind]} {group.name}: key {key!r} is given twice ({flag} {value!r})")
        data[key] = text
    for key in group.remove:
        check_key("--remove-key", key, key)
        if key in data:
            raise ReleaseError(f"{FLAG[group.kind]} {group.name}: key {key!r} is both set and removed")
    return ConfigEdit(kind=group.kind, name=group.name, data=data, remove=tuple(dict.fromkeys(group.remove)))


def parse_groups(groups: Sequence[ConfigFlags], read: Callable[[str], bytes] = read_file) -> list[ConfigEdit]:
    edits = [parse_group(g, read) for g in groups]
    seen: set[tuple[str, str]] = set()
    for edit in edits:
        if (edit.kind, edit.name) in seen:
            raise ReleaseError(f"{edit.flag} is given twice: put all its --from-file, --from-literal and "
                               "--remove-key flags after one")
        seen.add((edit.kind, edit.name))
    return edits


def config_map_change(edit: ConfigEdit) -> dict[str, Any]:
    """spec.change.configMaps[]: the keys set, the keys removed; the operator keeps the others."""
    out: dict[str, Any] = {"name": edit.name, "data": dict(edit.data)}
    if edit.remove:
        out["removeKeys"] = list(edit.remove)
    return out


def secret_version(edit: ConfigEdit, current: Mapping[str, Any], namespace: str) -> SecretVersion:
    """The immutable Secret holding `current`'s data with the edit applied, named by its content."""
    data = dict(current.get("data") or {})
    missing = [k for k in edit.remove if k not in data]
    if missing:
        raise ReleaseError(f"--remove-key {missing[0]}: Secret {edit.name!r} has no such key (its keys: "
                           f"{', '.join(sorted(data)) or 'none'})")
    data = merged_data(data, edit.data, list(edit.remove))
    version = version_name(edit.name, content_digest(data, None))
    body = {"apiVersion": "v1", "kind": "Secret", "type": current.get("type") or "Opaque", "immutable": True,
            "data": data,
            "metadata": {"name": version, "namespace": namespace,
                         "labels": version_labels(edit.name)}}
    return SecretVersion(name=edit.name, version=version, body=body, exists=False, keys=tuple(edit.data),
                         removed=edit.remove)


def reuse(planned: SecretVersion, existing: Mapping[str, Any] | None) -> SecretVersion:
    """An existing object by the version's name: reused when it is a version of the Secret with the same data,
    else an error naming it (it is not the content the flags ask for)."""
    if existing is None:
        return planned
    labels = (existing.get("metadata") or {}).get("labels") or {}
    where = f'Secret "{planned.version}" exists in namespace "{planned.body["metadata"]["namespace"]}"'
    if not is_version_of_labelled(labels, planned.name):
        raise CliError(f"Error: --secret {planned.name}: {where} and is not a version of {planned.name!r} (it lacks "
                       f"the label {CONFIG_OF_LABEL}={planned.name}); rename or delete it, then release again")
    if dict(existing.get("data") or {}) != planned.body["data"]:
        raise CliError(f"Error: --secret {planned.name}: {where} with other data than the new content; delete it "
                       f"(kubectl delete secret {planned.version}), then release again")
    return replace(planned, exists=True)


def _read(kube: SecretApi, namespace: str, name: str, purpose: str) -> dict[str, Any] | None:
    obj, refused = kube.get_secret(namespace, name)
    if refused:
        raise CliError(f'Error: --secret: you may not read Secret "{name}" in namespace "{namespace}" ({refused}). '
                       f"The plugin reads it as you to {purpose}: --secret needs get and create on Secrets in "
                       f'namespace "{namespace}"')
    return obj


def plan_secret(kube: SecretApi, namespace: str, edit: ConfigEdit) -> SecretVersion:
    """Read the Secret, apply the edit, and check whether its version exists (nothing is created here)."""
    current = _read(kube, namespace, edit.name, "set the keys on its current content")
    if current is None:
        raise CliError(f'Error: --secret {edit.name}: Secret "{edit.name}" not found in namespace "{namespace}" '
                       "(a release changes a Secret the target's pods read)")
    planned = secret_version(edit, current, namespace)
    return reuse(planned, _read(kube, namespace, planned.version, "check the version it would make"))


def config_change(kube: SecretApi, namespace: str, groups: Sequence[ConfigFlags],
                  read: Callable[[str], bytes] = read_file) -> tuple[dict[str, Any], list[SecretVersion]]:
    """spec.change's configMaps and secrets for the --config/--secret flags, and the Secret versions to make.
    Raises ReleaseError for a bad flag, CliError when a Secret cannot be read or its version conflicts."""
    edits = parse_groups(groups, read)
    change: dict[str, Any] = {}
    maps = [config_map_change(e) for e in edits if e.kind == "ConfigMap"]
    versions = [plan_secret(kube, namespace, e) for e in edits if e.kind == "Secret"]
    if maps:
        change["configMaps"] = maps
    if versions:
        change["secrets"] = [{"name": v.name, "contentFrom": v.version} for v in versions]
    return change, versions


def make_versions(kube: SecretApi, namespace: str, versions: Sequence[SecretVersion], dry_run: str | None) -> list[str]:
    """Create the Secret versions that do not exist yet (not on a client dry run); what was done, by name and
    keys only."""
    lines = []
    for v in versions:
        what = f"secret/{v.version} (immutable, {secret_keys_text(v)})"
        if v.exists:
            lines.append(f"{what} unchanged: an identical version of {v.name} exists")
            continue
        if dry_run != "client":
            kube.create_secret(namespace, v.body, dry_run=dry_run == "server")
        lines.append(f"{what} created" + (f" ({dry_run} dry run)" if dry_run else ""))
    return lines


def secret_keys_text(v: SecretVersion) -> str:
    parts = [f"sets {', '.join(v.keys)}"] if v.keys else []
    if v.removed:
        parts.append(f"removes {', '.join(v.removed)}")
    return "; ".join(parts)


def config_facts(change: Mapping[str, Any], versions: Sequence[SecretVersion] = ()) -> list[tuple[str, str]]:
    """("ConfigMap", "shop-config: sets a, b; removes c"), ("Secret", "shop-secret: sets token; reads
    shop-secret-0a1b2c3d4e"): names and keys, never values."""
    facts = []
    for c in change.get("configMaps") or []:
        bits = [f"sets {', '.join(c['data'])}"] if c.get("data") else []
        if c.get("removeKeys"):
            bits.append(f"removes {', '.join(c['removeKeys'])}")
        if c.get("contentFrom"):
            bits.append(f"content of ConfigMap {c['contentFrom']}")
        facts.append(("ConfigMap", f"{c.get('name')}: {'; '.join(bits)}"))
    by_name = {v.name: v for v in versions}
    for s in change.get("secrets") or []:
        v = by_name.get(s.get("name"))
        keys = f"{secret_keys_text(v)}; " if v is not None else ""
        facts.append(("Secret", f"{s.get('name')}: {keys}reads {s.get('contentFrom')}"))
    return facts
