"""kopf's diff-base (the "last handled configuration" annotation), built without copying what it throws away.

kopf builds an object's essence on every watch event of a resource with changing handlers (ours: the
GuardedRollout's daemon and its deletion handler), and its builder deep-copies the whole body first, status
and metadata included, to delete them from the copy. A GuardedRollout's status (history, judgements) is most
of its size and changes on every decision, so at a few hundred rollouts that copy was about 6% of the
operator's CPU (py-spy, N = 335). This storage hands the builder the body without the parts the essence
never keeps; the essence, and so the annotation, is the same as kopf's (tests/unit/test_essence.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import kopf

# What the builder reads of metadata: the labels and annotations it keeps, and what keys are formed from.
_METADATA_KEPT = ("name", "namespace", "uid", "labels", "annotations")


class LeanDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        if extra_fields:  # a handler watching a status field: the builder needs the whole body
            return super().build(body=body, extra_fields=extra_fields)
        raw = {k: v for k, v in body.items() if k not in ("status", "metadata")}
        metadata = body.get("metadata", {})
        raw["metadata"] = {k: metadata[k] for k in _METADATA_KEPT if k in metadata}
        return super().build(body=kopf.Body(raw))
