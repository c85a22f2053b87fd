"""Identity at admission, as plain data: authors accumulate, approvers cannot be forged."""

from __future__ import annotations

import json

import pytest

from guarded.api.rollout import AUTHORS_ANNOTATION, REQUEST_ANNOTATION, REQUESTER_ANNOTATION
from guarded.core.admission import AdmissionRefused, User, approval_stamp, approved_rollout, rollout_stamp

ALICE = User(username="alice", groups=("engineers",))
BOB = User(username="bob", groups=("engineers",))


def rollout(spec: dict, **annotations: str) -> dict:
    return {"metadata": {"name": "release", "uid": "uid-1", "generation": 2, "annotations": annotations},
            "spec": spec}


def test_the_creator_is_the_author_whatever_the_annotation_claims() -> None:
    forged = rollout({"image": "1"}, **{AUTHORS_ANNOTATION: '["carol"]'})
    stamp = rollout_stamp(operation="CREATE", user=ALICE, new=forged, old=None)
    assert stamp.annotations[AUTHORS_ANNOTATION] == '["alice"]'


def test_whoever_changes_the_spec_becomes_an_author_and_others_do_not() -> None:
    old = rollout({"image": "1"}, **{AUTHORS_ANNOTATION: '["alice"]'})
    changed = rollout({"image": "2"}, **{AUTHORS_ANNOTATION: '["alice"]'})
    assert json.loads(rollout_stamp(operation="UPDATE", user=BOB, new=changed, old=old)
                      .annotations[AUTHORS_ANNOTATION]) == ["alice", "bob"]
    relabelled = rollout({"image": "1"}, **{AUTHORS_ANNOTATION: "[]"})  # someone tries to erase the authors
    assert rollout_stamp(operation="UPDATE", user=BOB, new=relabelled, old=old).annotations == {
        AUTHORS_ANNOTATION: '["alice"]'}


def test_the_requester_of_a_manual_request_is_stamped() -> None:
    old = rollout({"image": "1"}, **{AUTHORS_ANNOTATION: '["alice"]'})
    asked = rollout({"image": "1"}, **{AUTHORS_ANNOTATION: '["alice"]', REQUEST_ANNOTATION: '{"id":"1"}',
                                       REQUESTER_ANNOTATION: "carol"})
    assert rollout_stamp(operation="UPDATE", user=BOB, new=asked, old=old).annotations == {REQUESTER_ANNOTATION: "bob"}


@pytest.mark.parametrize(("user", "spec", "says"), [
    (BOB, {"rollout": "release", "approver": "carol"}, "cannot approve as 'carol'"),
    (BOB, {"rollout": "release", "approverGroups": ["senior-engineers"]}, "are not your groups"),
    (BOB, {"rollout": "release", "revision": 1}, "is at revision 2, not 1"),
    (BOB, {"rollout": "release", "rolloutUid": "other"}, "is not the uid"),
    (ALICE, {"rollout": "release"}, "'alice' is an author"),
    # Wrong types reach the mutating webhook before the schema: refused naming the field (found by fuzzing).
    (BOB, {"rollout": "release", "revision": ""}, "spec.revision: must be a whole number"),
    (BOB, {"rollout": "release", "revision": True}, "spec.revision: must be a whole number"),
    (BOB, {"rollout": "release", "approverGroups": 7}, "spec.approverGroups: must be a list"),
    (BOB, {"rollout": "release", "approverGroups": [None]}, "spec.approverGroups: must be a list"),
])
def test_an_approval_claiming_what_the_api_server_did_not_authenticate_is_refused(user: User, spec: dict,
                                                                                   says: str) -> None:
    target = rollout({}, **{AUTHORS_ANNOTATION: '["alice"]'})
    with pytest.raises(AdmissionRefused, match=says):
        approval_stamp(operation="CREATE", user=user, spec=spec, old_spec=None, rollout=target)


def test_an_approval_gets_its_identity_from_the_request() -> None:
    target = rollout({}, **{AUTHORS_ANNOTATION: '["alice"]'})
    stamp = approval_stamp(operation="CREATE", user=BOB, spec={"rollout": "release", "approver": "bob"},
                           old_spec=None, rollout=target)
    assert stamp.spec == {"approver": "bob", "approverGroups": ["engineers"], "rolloutUid": "uid-1", "revision": 2}


def test_approvals_are_immutable_and_need_a_rollout() -> None:
    with pytest.raises(AdmissionRefused, match="immutable"):
        approval_stamp(operation="UPDATE", user=BOB, spec={"rollout": "a", "approver": "carol"},
                       old_spec={"rollout": "a", "approver": "bob"}, rollout=None)
    with pytest.raises(AdmissionRefused, match="no GuardedRollout 'gone'"):
        approval_stamp(operation="CREATE", user=BOB, spec={"rollout": "gone"}, old_spec=None, rollout=None)
    with pytest.raises(AdmissionRefused, match="no authenticated user"):
        User.from_userinfo({})


def test_unknown_authors_stay_unknown_when_someone_else_edits_the_spec() -> None:
    old = rollout({"image": "1"})  # created before the webhook: nobody knows who wrote it
    edited = rollout({"image": "2"})
    stamp = rollout_stamp(operation="UPDATE", user=BOB, new=edited, old=old)
    assert stamp.annotations.get(AUTHORS_ANNOTATION) is None


def test_every_field_the_webhook_stamps_is_a_field_of_the_schema() -> None:
    """The API server prunes unknown fields silently: a misspelt key would simply vanish (it once did)."""
    from guarded.api.policy import RolloutApprovalSpec
    target = rollout({}, **{AUTHORS_ANNOTATION: '["alice"]'})
    stamp = approval_stamp(operation="CREATE", user=BOB, spec={"rollout": "release"}, old_spec=None, rollout=target)
    parsed = RolloutApprovalSpec.model_validate({"rollout": "release", **stamp.spec})
    assert (parsed.approver, parsed.rollout_uid, parsed.revision) == ("bob", "uid-1", 2)


@pytest.fixture(params=["\u0086\u009e%\U000bdc47", "Shop", "a" * 254, 7, 1e300, ["shop"], {"name": "shop"}, "-shop"])
def impossible_name(request: pytest.FixtureRequest) -> object:
    return request.param


def test_an_approval_of_a_name_no_rollout_can_have_is_refused_naming_spec_rollout(impossible_name: object) -> None:
    # Found by fuzzing: the webhook looked such a name up, the API server answered 400 and the webhook
    # failed with a 500 that named nothing.
    with pytest.raises(AdmissionRefused, match=r"^spec\.rollout: "):
        approved_rollout({"rollout": impossible_name})


def test_an_approval_names_a_rollout_to_look_up() -> None:
    assert approved_rollout({"rollout": "shop-2.1"}) == "shop-2.1"
    assert approved_rollout({}) is None  # refused by approval_stamp: no GuardedRollout named
