"""Label selectors, as the controllers need them: does a LabelSelector
message match a set of labels.

An empty selector matches everything (as in Kubernetes); callers that must
not adopt the whole namespace check `is_empty` first. An operator the API
should have rejected matches nothing, so a bad selector never grabs pods.
"""

from __future__ import annotations

from collections.abc import Mapping

from proto.podium.v1 import meta_pb2


def is_empty(selector: meta_pb2.LabelSelector) -> bool:
    return not selector.match_labels and not selector.match_expressions


def _requirement(req: meta_pb2.LabelSelectorRequirement, labels: Mapping[str, str]) -> bool:
    present = req.key in labels
    if req.operator == "In":
        return present and labels[req.key] in req.values
    if req.operator == "NotIn":
        return not present or labels[req.key] not in req.values
    if req.operator == "Exists":
        return present
    if req.operator == "DoesNotExist":
        return not present
    return False


def matches(selector: meta_pb2.LabelSelector, labels: Mapping[str, str]) -> bool:
    """True if every match_labels pair and every expression holds for `labels`."""
    for key, value in selector.match_labels.items():
        if labels.get(key) != value:
            return False
    return all(_requirement(req, labels) for req in selector.match_expressions)
