"""The plugin's only contact with the API server: kubeconfig, namespace, get, list, patch, create.

Besides GuardedRollouts and RolloutApprovals, `release` reads the target Deployment, and the
RolloutPolicies and the namespace's labels when the user may (their releaseDefaults); with --secret it
reads that Secret and creates its immutable version (release_config.py), always as the user.

Objects come back as plain dicts with the API's camelCase keys. Every API failure becomes a
`CliError` whose text is what the user sees, so no command ever shows a traceback.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import kubernetes
import urllib3
from kubernetes.client.rest import ApiException

from guarded.api.common import GROUP, VERSION
from guarded.api.policy import APPROVAL_KIND, APPROVAL_PLURAL, POLICY_PLURAL
from guarded.api.rollout import KIND, PLURAL
from guarded.cli.errors import EXIT_ERROR, EXIT_REJECTED, CliError

MERGE_PATCH = "application/merge-patch+json"
Objects = list[dict[str, Any]]  # a name of its own: inside Kube, `list` is the method
# How the API server reports a refusal by one of the operator's admission webhooks (kopf names them
# "<handler id>.guarded-rollouts.rollouts.guarded.dev").
OPERATOR_WEBHOOK_DENIAL = re.compile(rf'admission webhook "[^"]*\.{re.escape(GROUP)}" denied the request')


def default_kubeconfig() -> str:
    return os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")


def api_message(exc: ApiException) -> str:
    """The API server's own message (from its Status body), or the HTTP reason."""
    try:
        body = json.loads(exc.body or "")
        if isinstance(body, dict) and body.get("message"):
            return str(body["message"])
    except (TypeError, ValueError):
        pass
    return str(exc.reason or f"HTTP {exc.status}")


def api_error(exc: ApiException, namespace: str | None = None, name: str | None = None,
              kind: str = KIND) -> CliError:
    """kubectl's wording; a refusal by the operator's admission webhook exits 3 (the operator rejected it)."""
    if exc.status == 404 and name is not None:
        return CliError(f'Error: {kind.lower()} "{name}" not found in namespace "{namespace}"')
    if exc.status == 404:
        return CliError(f"Error: {api_message(exc)} (is the {kind} CRD installed?)")
    reasons = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 409: "Conflict", 422: "Invalid"}
    reason = reasons.get(exc.status or 0, str(exc.reason or exc.status))
    message = api_message(exc)
    code = EXIT_REJECTED if OPERATOR_WEBHOOK_DENIAL.search(message) else EXIT_ERROR
    return CliError(f"Error from server ({reason}): {message}", code)


class Kube:
    """A connection as kubectl would make it from --kubeconfig and --context."""

    def __init__(self, kubeconfig: str | None = None, context: str | None = None) -> None:
        self.kubeconfig = kubeconfig or default_kubeconfig()
        self.context = context
        paths = [p for p in self.kubeconfig.split(os.pathsep) if p]
        if not any(os.path.exists(p) for p in paths):
            raise CliError(f"Error: kubeconfig {self.kubeconfig} does not exist (give --kubeconfig or set KUBECONFIG)")
        try:
            contexts, current = kubernetes.config.list_kube_config_contexts(self.kubeconfig)
            chosen = current if context is None else next((c for c in contexts if c.get("name") == context), None)
            if chosen is None:
                raise CliError(f'Error: context "{context}" does not exist in {self.kubeconfig}')
            self.context_namespace: str | None = (chosen.get("context") or {}).get("namespace")
            self.api_client = kubernetes.config.new_client_from_config(config_file=self.kubeconfig, context=context)
        except kubernetes.config.ConfigException as exc:
            raise CliError(f"Error: cannot use kubeconfig {self.kubeconfig}: {exc}") from None
        except OSError as exc:
            raise CliError(f"Error: cannot read kubeconfig {self.kubeconfig}: {exc}") from None
        self.custom = kubernetes.client.CustomObjectsApi(self.api_client)

    def namespace(self, explicit: str | None) -> str:
        """-n wins, then the context's namespace, then "default" (as kubectl does)."""
        return explicit or self.context_namespace or "default"

    def _call(self, fn: Any, *args: Any, namespace: str | None = None, name: str | None = None,
              kind: str = KIND, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            raise api_error(exc, namespace, name, kind) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            host = self.api_client.configuration.host
            raise CliError(f"Error: cannot reach the API server at {host}: {exc}") from None

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        return self._call(self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name,
                          namespace=namespace, name=name)

    def list(self, namespace: str | None) -> Objects:
        """The GuardedRollouts of one namespace, or of all when `namespace` is None."""
        return self._list(PLURAL, KIND, namespace)

    def list_approvals(self, namespace: str | None) -> Objects:
        """The RolloutApprovals of one namespace, or of all when `namespace` is None."""
        return self._list(APPROVAL_PLURAL, APPROVAL_KIND, namespace)

    def _list(self, plural: str, kind: str, namespace: str | None) -> Objects:
        if namespace is None:
            result = self._call(self.custom.list_cluster_custom_object, GROUP, VERSION, plural, kind=kind)
        else:
            result = self._call(self.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, plural,
                                namespace=namespace, kind=kind)
        return list(result.get("items") or [])

    def create_approval(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create a RolloutApproval; the operator's admission webhook stamps (or refuses) the approver."""
        return self._call(self.custom.create_namespaced_custom_object, GROUP, VERSION, namespace, APPROVAL_PLURAL,
                          body, namespace=namespace, kind=APPROVAL_KIND)

    def merge_patch(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call(self.custom.patch_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name,
                          body, _content_type=MERGE_PATCH, namespace=namespace, name=name)

    def create_rollout(self, namespace: str, body: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
        """Create a GuardedRollout; the operator's admission webhook stamps (or refuses) its authors.
        With `dry_run` the API server admits it (webhooks included) and stores nothing."""
        extra = {"dry_run": "All"} if dry_run else {}
        return self._call(self.custom.create_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, body,
                          namespace=namespace, **extra)

    def get_deployment(self, namespace: str, name: str) -> dict[str, Any]:
        """A Deployment as the API returns it (camelCase keys)."""
        apps = kubernetes.client.AppsV1Api(self.api_client)
        resp = self._call(apps.read_namespaced_deployment, name, namespace, _preload_content=False,
                          namespace=namespace, name=name, kind="Deployment")
        return dict(json.loads(resp.data))

    def get_secret(self, namespace: str, name: str) -> tuple[dict[str, Any] | None, str]:
        """A Secret read as the user: (it, ""), (None, "") when there is none, or (None, the API server's
        message) when RBAC refuses it. Its data is for hashing and copying only: never print it."""
        core = kubernetes.client.CoreV1Api(self.api_client)
        try:
            resp: Any = core.read_namespaced_secret(name, namespace, _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                return None, ""
            if exc.status in (401, 403):
                return None, api_message(exc)
            raise api_error(exc, namespace, name, "Secret") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise CliError(f"Error: cannot reach the API server at {self.api_client.configuration.host}: {exc}") \
                from None
        return dict(json.loads(resp.data)), ""

    def create_secret(self, namespace: str, body: dict[str, Any], dry_run: bool = False) -> None:
        core = kubernetes.client.CoreV1Api(self.api_client)
        extra = {"dry_run": "All"} if dry_run else {}
        self._call(core.create_namespaced_secret, namespace, body, _preload_content=False, namespace=namespace,
                   kind="Secret", **extra)

    def readable(self, what: str, fn: Any, *args: Any) -> tuple[Any, str]:
        """(the result, "") or, when RBAC denies it or it does not exist, (None, why): for what the plugin
        reads only if the user may."""
        try:
            resp = fn(*args, _preload_content=False)
        except ApiException as exc:
            if exc.status in (401, 403, 404):
                return None, f"{what}: {api_message(exc)}"
            raise api_error(exc, kind=what) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise CliError(f"Error: cannot reach the API server at {self.api_client.configuration.host}: {exc}") \
                from None
        return json.loads(resp.data), ""

    def policies_if_readable(self) -> tuple[Objects | None, str]:
        """The RolloutPolicies (cluster-scoped), or None and why when the user may not list them."""
        data, why = self.readable("RolloutPolicies", self.custom.list_cluster_custom_object, GROUP, VERSION,
                                  POLICY_PLURAL)
        return (None if data is None else list(data.get("items") or [])), why

    def namespace_labels_if_readable(self, namespace: str) -> dict[str, str] | None:
        core = kubernetes.client.CoreV1Api(self.api_client)
        data, _ = self.readable("Namespace", core.read_namespace, namespace)
        return None if data is None else dict((data.get("metadata") or {}).get("labels") or {})
