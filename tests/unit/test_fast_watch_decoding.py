"""kopf's watch streams decoded with orjson (guarded.main.fast_watch_decoding): the same events, once."""

from __future__ import annotations

import json
import subprocess
import sys

EVENT = {"type": "MODIFIED", "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {
    "name": "shop-7f9c", "namespace": "shop", "resourceVersion": "123456789012",
    "labels": {"app": "shop", "note": "caf\u00e9 \u2713"}, "annotations": {"n": "1.5e3", "big": "9007199254740993"}},
    "status": {"phase": "Running", "ready": True, "restarts": 0, "ratio": 0.25, "conditions": None}}}

MANAGED = {"type": "ADDED", "object": {"metadata": {"name": "shop", "labels": {"app": "shop"}, "managedFields": [
    {"manager": "guarded-rollouts", "operation": "Update", "fieldsType": "FieldsV1",
     "fieldsV1": {"f:status": {"f:phase": {}}}}]}, "spec": {"replicas": 2}}}

CHECK = f"""
import json, sys
from kopf._cogs.clients import api
from guarded.main import fast_watch_decoding
assert fast_watch_decoding() is True
assert api.json is not json and api.json.dumps is json.dumps, "kopf's api module: orjson for loads, json for the rest"
line = {json.dumps(EVENT)!r}.encode("utf-8")
assert api.json.loads(line.decode("utf-8")) == json.loads(line)
assert fast_watch_decoding() is False   # once: a second call changes nothing
managed = {json.dumps(MANAGED)!r}
decoded = api.json.loads(managed)
assert "managedFields" not in decoded["object"]["metadata"], decoded
assert decoded["object"]["metadata"]["labels"] == {{"app": "shop"}} and decoded["object"]["spec"] == {{"replicas": 2}}
assert api.json.loads('{{"type": "ERROR", "object": {{"kind": "Status", "code": 410}}}}')["object"]["code"] == 410
assert api.json.loads("[1, 2]") == [1, 2]
print("ok")
"""


def test_kopf_decodes_watch_events_with_orjson_to_the_same_objects_without_managed_fields():
    # In a process of its own: the change is to kopf's module, for the rest of the process.
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
