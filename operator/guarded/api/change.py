"""What a GuardedRollout changes (`spec.change`): containers, a pod template patch or a whole template, and
the ConfigMaps and Secrets its pods read. Part of the resource's models (api/rollout.py re-exports them)."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field, model_validator

from guarded.api.common import ApiModel, DnsName


class EnvVar(ApiModel):
    name: str = Field(min_length=1, max_length=253)
    value: str = ""


class ContainerChange(ApiModel):
    """New image and/or environment for one container of the target's pod template."""

    name: str = Field(min_length=1, max_length=63, description="Container name in the target's pod template.")
    image: str | None = Field(default=None, min_length=1, max_length=1024)
    env: list[EnvVar] = Field(default_factory=list, max_length=256,
                              description="Variables set (added or replaced by name).")


class ConfigMapChange(ApiModel):
    """New content for a ConfigMap the target's pods read. The canary's pods read a versioned, immutable
    copy (`<name>-<content hash>`); the stable pods keep what they read; promotion moves the target to it."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [{
        "rule": "has(self.data) != has(self.contentFrom)",
        "message": "give exactly one of data or contentFrom",
    }]})

    name: DnsName = Field(description="The ConfigMap the target's pods read (volumes, envFrom, env valueFrom).")
    data: dict[str, str] | None = Field(
        default=None, description="Keys set (added or replaced); the ConfigMap's other keys keep their values.",
        json_schema_extra={"maxProperties": 1024})
    remove_keys: list[str] = Field(default_factory=list, max_length=1024,
                                   description="Keys removed (with data).")
    content_from: DnsName | None = Field(
        default=None, description="A ConfigMap in this namespace whose whole content is the new content.")

    @model_validator(mode="after")
    def _one_source(self) -> ConfigMapChange:
        if (self.data is None) == (self.content_from is None):
            raise ValueError("give exactly one of data or contentFrom")
        if self.remove_keys and self.data is None:
            raise ValueError("removeKeys goes with data (contentFrom is the whole content)")
        return self


class SecretChange(ApiModel):
    """New content for a Secret the target's pods read, taken from another Secret (its data never enters
    the GuardedRollout, its status, Events or logs). Versioned like a ConfigMap change."""

    name: DnsName = Field(description="The Secret the target's pods read.")
    content_from: DnsName = Field(description="A Secret in this namespace whose whole content is the new content.")


class Change(ApiModel):
    """What changes: the target's pod template and/or the configuration its pods read. Applied to the canary
    first, to the target at promotion."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [{
        "rule": "(has(self.containers) && size(self.containers) > 0) || has(self.podTemplatePatch)"
                " || has(self.template) || (has(self.configMaps) && size(self.configMaps) > 0)"
                " || (has(self.secrets) && size(self.secrets) > 0)",
        "message": "give at least one of containers, podTemplatePatch, template, configMaps or secrets",
    }, {
        "rule": "!has(self.template) || (!has(self.podTemplatePatch) && (!has(self.containers)"
                " || size(self.containers) == 0))",
        "message": "a whole template replaces the pod template: give it alone",
    }]})

    containers: list[ContainerChange] = Field(default_factory=list, max_length=64)
    pod_template_patch: dict[str, Any] | None = Field(
        default=None,
        description="A strategic-merge patch of the pod template (lists of containers, env, volumes, "
        "ports merge by name; null deletes a key).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )

    template: dict[str, Any] | None = Field(
        default=None,
        description="The whole pod template to roll out, replacing the target's (a plain apply of a guarded "
        "Deployment is recorded as this). Alone: not with containers or podTemplatePatch.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    config_maps: list[ConfigMapChange] = Field(default_factory=list, max_length=16,
                                               description="ConfigMaps whose new content rides the waves.")
    secrets: list[SecretChange] = Field(default_factory=list, max_length=16,
                                        description="Secrets whose new content rides the waves.")

    @model_validator(mode="after")
    def _not_empty(self) -> Change:
        if self.template is not None and (self.containers or self.pod_template_patch):
            raise ValueError("spec.change.template: a whole template replaces the pod template: give it alone")
        if (not self.containers and not self.pod_template_patch and self.template is None
                and not self.config_maps and not self.secrets):
            raise ValueError("spec.change: give at least one of containers, podTemplatePatch, template, configMaps "
                             "or secrets")
        for what, items in (("containers", self.containers), ("configMaps", self.config_maps),
                            ("secrets", self.secrets)):
            names = [c.name for c in items]
            if len(names) != len(set(names)):
                raise ValueError(f"spec.change.{what}: each name may appear only once")
        return self
