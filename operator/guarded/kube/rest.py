"""The Kubernetes API's REST calls the operator makes, without the client's generated API classes.

The official client's generated classes cost the operator's memory and CPU and give it nothing it uses: its
objects are read as JSON (orjson), never as the client's models. With kubernetes 37 (pydantic models),
touching CoreV1Api alone imports some 250 models, 20.5 MiB of the operator's resident memory, and each
call validates its arguments with pydantic before it is sent (issue 11: memory at N = 1,000 rollouts).

`Resources` answers the generated methods' names the operator calls (`read_namespaced_deployment(name,
namespace)`, `list_namespaced_custom_object(group, version, namespace, plural, label_selector=...)`, ...) with
the same arguments, so the code that calls them, and the tests' fakes of them, read as before. Each sends
one HTTP request through the client's own configuration and connection pool (its TLS, its credentials,
with a token's refresh), and answers as the generated method does with `_preload_content=False`: the HTTP
response, whose `.data` is the body. Where the API server refuses, it raises the client's ApiException,
with the status, the reason and the body.

A method name it does not know is an AttributeError at once, naming it: nothing is guessed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, urlencode

import orjson
import urllib3
from kubernetes.client.rest import ApiException

# The Accept headers that ask the API server for metadata only: an object's (PartialObjectMetadata; also each
# event of a watch) and a listing's (PartialObjectMetadataList).
METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"

# (method, url, headers, body, timeout) -> the HTTP response, its body read
Send = Callable[[str, str, dict[str, str], bytes | None, Any], Any]

# Built-in kinds: the snake_case name the generated methods use, and the kind's plural in the API path.
CORE = {"namespace": "namespaces", "pod": "pods", "service": "services", "config_map": "configmaps",
        "secret": "secrets", "event": "events"}
APPS = {"deployment": "deployments", "replica_set": "replicasets"}

# The query parameters the operator passes, by the generated methods' argument names.
_QUERY = {"label_selector": "labelSelector", "field_selector": "fieldSelector", "dry_run": "dryRun",
          "field_manager": "fieldManager", "propagation_policy": "propagationPolicy",
          "grace_period_seconds": "gracePeriodSeconds", "resource_version": "resourceVersion", "limit": "limit"}

_BUILT_IN = re.compile(r"^(read|list|create|patch|replace|delete)_(namespaced_)?([a-z_]+?)(_for_all_namespaces)?$")
_CUSTOM = re.compile(r"^(get|list|create|patch|replace|delete)_(namespaced|cluster)_custom_object(_status)?$")

_VERB = {"read": "GET", "get": "GET", "list": "GET", "create": "POST", "patch": "PATCH", "replace": "PUT",
         "delete": "DELETE"}


def _serialize(api_client: Any, body: Any) -> Any:
    """A body as JSON-ready data: a dict or list as it is, a client model (V1DeleteOptions, CoreV1Event) as the
    client would send it (camelCase keys, no unset fields)."""
    if body is None or isinstance(body, (dict, list)):
        return body
    return api_client.sanitize_for_serialization(body)


def _timeout(value: Any) -> urllib3.Timeout | None:
    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        return urllib3.Timeout(connect=value[0], read=value[1])
    return urllib3.Timeout(total=value)


class Rest:
    """One HTTP request to the API server, as the client's configuration says to send it."""

    def __init__(self, api_client: Any) -> None:
        self.api_client = api_client
        self.configuration = api_client.configuration

    def headers(self) -> dict[str, str]:
        """The client's default headers and its credentials, taken afresh for each request: a bearer token
        from an exec plugin or a projected service account token is refreshed by the configuration's hook."""
        out = {str(k): str(v) for k, v in (self.api_client.default_headers or {}).items()}
        for setting in (self.configuration.auth_settings() or {}).values():
            if setting.get("in") == "header" and setting.get("value"):
                out[setting["key"]] = setting["value"]
        return out

    def send(self, method: str, url: str, headers: dict[str, str], body: bytes | None, timeout: Any) -> Any:
        # The pool's own retries and redirects, as the generated client's requests have them.
        return self.api_client.rest_client.pool_manager.request(
            method, url, body=body, headers=headers, timeout=_timeout(timeout), preload_content=True)

    def call(self, method: str, path: str, *, query: Mapping[str, Any] | None = None, body: Any = None,
             content_type: str | None = None, headers: Mapping[str, str] | None = None,
             timeout: Any = None, send: Send | None = None) -> Any:
        """Send one request and answer the HTTP response (its .data the body); any status but 2xx raises
        ApiException."""
        url = self.configuration.host.rstrip("/") + path
        pairs = [(k, str(v).lower() if isinstance(v, bool) else str(v)) for k, v in (query or {}).items()
                 if v is not None and v != ""]
        if pairs:
            url += "?" + urlencode(pairs)
        sent = {"Accept": "application/json", **self.headers(), **dict(headers or {})}
        data = None
        if body is not None:
            data = orjson.dumps(_serialize(self.api_client, body))
            sent["Content-Type"] = content_type or "application/json"
        resp = (send or self.send)(method, url, sent, data, timeout)
        if not 200 <= resp.status <= 299:
            raise ApiException(http_resp=_Answer(resp))
        return resp


class _Answer:
    """What ApiException reads of a refused request (status, reason, body, headers), in any client release."""

    def __init__(self, resp: Any) -> None:
        self.status, self.reason, self.data = resp.status, resp.reason, resp.data
        self.headers = resp.headers

    def getheaders(self) -> Any:
        return self.headers


class Resources:
    """The generated API classes' methods the operator calls (CoreV1Api's, AppsV1Api's, CustomObjectsApi's),
    sent through `rest`. `kinds` maps a built-in kind's snake_case name to its plural under `prefix`
    (`/api/v1`, `/apis/apps/v1`); with no kinds, the custom-object methods."""

    def __init__(self, rest: Rest, prefix: str = "", kinds: Mapping[str, str] | None = None,
                 send: Send | None = None) -> None:
        self._rest, self._prefix, self._kinds, self._send = rest, prefix, dict(kinds or {}), send

    def __getattr__(self, method: str) -> Callable[..., Any]:
        if method.startswith("_"):
            raise AttributeError(method)
        call = self._custom(method) if not self._kinds else self._built_in(method)
        if call is None:
            raise AttributeError(f"{method!r}: not a call this client sends (kube/rest.py)")
        setattr(self, method, call)   # made once: the next use is a plain attribute
        return call

    def _request(self, verb: str, path: str, body: Any, kwargs: dict[str, Any], *, custom: bool) -> Any:
        headers = dict(kwargs.pop("_headers", None) or {})
        timeout = kwargs.pop("_request_timeout", None)
        content_type = kwargs.pop("_content_type", None)
        kwargs.pop("_preload_content", None)   # the answer is always the response, its body read
        query = {}
        for name, value in kwargs.items():
            if name not in _QUERY:
                raise TypeError(f"{name!r}: not an argument this client sends (kube/rest.py)")
            query[_QUERY[name]] = value
        if verb == "PATCH" and content_type is None:
            # As the generated client: a list is a JSON patch; an object is a merge patch, strategic for a
            # built-in kind (custom resources have no strategic merge).
            content_type = ("application/json-patch+json" if isinstance(body, list)
                            else "application/merge-patch+json" if custom else "application/strategic-merge-patch+json")
        return self._rest.call(verb, path, query=query, body=body, content_type=content_type, headers=headers,
                               timeout=timeout, send=self._send)

    def _built_in(self, method: str) -> Callable[..., Any] | None:
        match = _BUILT_IN.match(method)
        if match is None or match.group(3) not in self._kinds:
            return None
        action, namespaced, kind, _ = match.groups()   # list_X_for_all_namespaces: no namespace in the path
        plural = self._kinds[kind]
        named = action not in ("list", "create")

        def call(*args: Any, **kwargs: Any) -> Any:
            args_list = list(args)
            name = _arg(args_list, kwargs, "name") if named else None
            namespace = _arg(args_list, kwargs, "namespace") if namespaced else None
            body = _body(method, action, args_list, kwargs)
            return self._request(_VERB[action], _path(self._prefix, namespace, plural, name), body, kwargs,
                                 custom=False)

        call.__name__ = method
        return call

    def _custom(self, method: str) -> Callable[..., Any] | None:
        match = _CUSTOM.match(method)
        if match is None:
            return None
        action, scope, status = match.groups()
        named = action not in ("list", "create")

        def call(*args: Any, **kwargs: Any) -> Any:
            args_list = list(args)
            group, version = _arg(args_list, kwargs, "group"), _arg(args_list, kwargs, "version")
            namespace = _arg(args_list, kwargs, "namespace") if scope == "namespaced" else None
            plural = _arg(args_list, kwargs, "plural")
            name = _arg(args_list, kwargs, "name") if named else None
            body = _body(method, action, args_list, kwargs)
            path = _path(f"/apis/{group}/{version}", namespace, plural, name) + ("/status" if status else "")
            return self._request(_VERB[action], path, body, kwargs, custom=True)

        call.__name__ = method
        return call


def _arg(args: list[Any], kwargs: dict[str, Any], name: str) -> Any:
    """The next positional argument, or the keyword one of that name."""
    if name in kwargs:
        return kwargs.pop(name)
    if not args:
        raise TypeError(f"missing argument {name!r}")
    return args.pop(0)


def _body(method: str, action: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """The request's body (a write's next argument; a delete's options, if given), once every other positional
    argument was taken: any left over is an error."""
    body = _arg(args, kwargs, "body") if action in ("create", "patch", "replace") else kwargs.pop("body", None)
    if args:
        raise TypeError(f"{method}: unexpected arguments {args!r}")
    return body


def _path(prefix: str, namespace: str | None, plural: str, name: str | None) -> str:
    """`<prefix>[/namespaces/<namespace>]/<plural>[/<name>]`, the names escaped."""
    return (prefix + (f"/namespaces/{quote(namespace, safe='')}" if namespace else "") + f"/{plural}"
            + (f"/{quote(name, safe='')}" if name is not None else ""))
