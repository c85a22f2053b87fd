"""The one spec builder of the unit tests: the shop's change, plus what a test varies.

    spec()                                             # what a user writes at least: target, change
    spec(waves=waves("1 pod", "50%", "100%", bake="3s"), analysis=analysis(interval="5s"))
    spec(image="shop:latest", progressDeadline="20s")  # other fields in their wire form (camelCase)
    body(image="shop:2", waves=[{"weight": 0}])        # the same as a plain dict, for tests of validation

Waves are written as they read: "1 pod", "3 pods", "10%"; `wave(...)` gives one a bake of its own or a
manual gate. Without `waves`, the spec has the model's default waves (1 pod, 10%, 50%, 100%, 60 s each).
"""

from __future__ import annotations

import re
from typing import Any

from guarded.api.rollout import GuardedRolloutSpec

TARGET = "shop"
IMAGE = "shop:2.0.0"


def wave(size: str, *, bake: str | None = None, gate: bool = False) -> dict:
    """One entry of spec.waves: `wave("1 pod")`, `wave("3 pods", bake="2s")`, `wave("100%", gate=True)`."""
    pods = re.fullmatch(r"(\d+) pods?", size)
    percent = re.fullmatch(r"(\d+)%", size)
    if pods:
        out: dict = {"replicas": int(pods.group(1))}
    elif percent:
        out = {"weight": int(percent.group(1))}
    else:
        raise ValueError(f"a wave is 'N pod(s)' or 'N%', not {size!r}")
    if bake is not None:
        out["bake"] = bake
    if gate:
        out["manualGate"] = True
    return out


def waves(*sizes: str | dict, bake: str | None = None) -> list[dict]:
    """spec.waves: each size a wave baking `bake` (`waves("1 pod", "10%", "100%", bake="5s")`); a dict, as is."""
    return [s if isinstance(s, dict) else wave(s, bake=bake) for s in sizes]


def analysis(**fields: Any) -> dict:
    """spec.analysis guarding the shop's requests and orders; `fields` in wire form (interval="5s")."""
    return {"requests": "http_requests_total", "orders": "orders_total", **fields}


def body(*, image: str = IMAGE, target: str = TARGET, waves: list[dict] | None = None, **fields: Any) -> dict:
    """A spec in its wire form; `fields` (camelCase) are set as given and replace the defaults (change=...)."""
    out: dict = {"target": {"name": target}, "change": {"containers": [{"name": "app", "image": image}]}}
    if waves is not None:
        out["waves"] = waves
    out.update(fields)
    return out


def spec(*, image: str = IMAGE, target: str = TARGET, waves: list[dict] | None = None,
         **fields: Any) -> GuardedRolloutSpec:
    """A validated GuardedRolloutSpec (see `body`)."""
    return GuardedRolloutSpec.model_validate(body(image=image, target=target, waves=waves, **fields))


# Wave plans the simulations share (short bakes: a World tick is a second).
QUICK = waves("1 pod", "10%", "50%", "100%", bake="5s")  # the default sizes, 5 s each
THREE = waves("1 pod", "50%", "100%", bake="3s")        # 1 pod, half, all; 3 s each
