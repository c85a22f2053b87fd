"""Releases made of plain applies: the operator creates them on behalf of the requester, nobody else can."""

from __future__ import annotations

import json

import pytest

from guarded.api.rollout import AUTHORS_ANNOTATION
from guarded.core.admission import ON_BEHALF_OF, AdmissionRefused, User, rollout_stamp


def rollout(**annotations: str) -> dict:
    return {"metadata": {"name": "shop-1234", "annotations": dict(annotations)}, "spec": {"target": {"name": "shop"}}}


def test_the_operator_creates_a_release_authored_by_the_requester() -> None:
    stamp = rollout_stamp(operation="CREATE", user=User(username="guarded-operator", groups=()),
                          new=rollout(**{ON_BEHALF_OF: "alice"}), old=None, operator=True)
    assert json.loads(stamp.annotations[AUTHORS_ANNOTATION] or "") == ["alice"]


def test_anyone_else_naming_someone_on_whose_behalf_they_act_is_refused() -> None:
    with pytest.raises(AdmissionRefused, match=ON_BEHALF_OF):
        rollout_stamp(operation="CREATE", user=User(username="alice", groups=()),
                      new=rollout(**{ON_BEHALF_OF: "bob"}), old=None, operator=False)


def test_without_a_delegate_the_operator_is_the_author_like_anyone() -> None:
    stamp = rollout_stamp(operation="CREATE", user=User(username="guarded-operator", groups=()),
                          new=rollout(), old=None, operator=True)
    assert json.loads(stamp.annotations[AUTHORS_ANNOTATION] or "") == ["guarded-operator"]
