"""Label and field selectors: the syntax Kubernetes writes, what matches, and the errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proto.podium.v1 import cluster_pb2, core_pb2, meta_pb2, node_pb2, pod_pb2
from scheduler.api.selectors import (
    EVERYTHING,
    NOTHING,
    Operator,
    Requirement,
    SelectorError,
    matcher_from,
    matcher_from_labels,
    parse_field_selector,
    parse_label_selector,
    selectable_fields,
)

WEB = {"app": "web", "tier": "front", "env": "prod"}


@pytest.mark.parametrize(("text", "labels", "expected"), [
    ("", {}, True),
    ("   ", WEB, True),
    ("app=web", WEB, True),
    ("app==web", WEB, True),
    ("app=db", WEB, False),
    ("app!=db", WEB, True),
    ("app!=web", WEB, False),
    ("missing!=x", WEB, True),
    ("env in (prod,staging)", WEB, True),
    ("env in (dev)", WEB, False),
    ("missing in (x)", WEB, False),
    ("env notin (dev,test)", WEB, True),
    ("env notin (prod)", WEB, False),
    ("missing notin (x)", WEB, True),
    ("app", WEB, True),
    ("missing", WEB, False),
    ("!missing", WEB, True),
    ("!app", WEB, False),
    ("app=web,tier=front", WEB, True),
    ("app=web,tier=back", WEB, False),
    ("  app = web ,  env in ( prod , x ) ,!canary ", WEB, True),
    ("a=", {"a": ""}, True),
    ("a=", {}, False),
    ("a!=", {"a": ""}, False),
    ("example.com/role=db", {"example.com/role": "db"}, True),
    ("in=notin", {"in": "notin"}, True),
    ("in in (in)", {"in": "in"}, True),
    ("a in (,x)", {"a": ""}, True),
])
def test_label_selector_matches(text: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_label_selector(text).matches(labels) is expected


@pytest.mark.parametrize(("text", "position", "what"), [
    ("a b", 2, '"b"'),
    ("a in b", 5, '"b"'),
    ("a in (x", 7, "the end"),
    ("=a", 0, '"="'),
    ("a,", 2, "the end"),
    ("a,,b", 2, '","'),
    ("!", 1, "the end"),
    ("a!", 1, '"!"'),
    ("a=b=c", 3, '"="'),
    ("a=(b)", 2, '"("'),
    ("a in (x)y", 8, '"y"'),
])
def test_label_selector_syntax_errors_name_the_position(text: str, position: int,
                                                         what: str) -> None:
    with pytest.raises(SelectorError) as info:
        parse_label_selector(text)
    assert f"found {what} at position {position}" in str(info.value)
    assert f'label selector "{text}"' in str(info.value)


@pytest.mark.parametrize(("text", "message"), [
    ("a in ()", "in needs at least one value"),
    ("a notin ()", "notin needs at least one value"),
    ("Bad Key!=x", "found"),
    ("-a=b", "not a qualified name"),
    ("a=-b", "not a label value"),
    ("a=" + "x" * 64, "longer than 63"),
    ("/a=b", "empty prefix"),
    ("Ex.com/a=b", "prefix"),
])
def test_label_selector_refuses_bad_keys_and_values(text: str, message: str) -> None:
    with pytest.raises(SelectorError, match=message):
        parse_label_selector(text)


def test_label_selector_prints_canonically_sorted() -> None:
    matcher = parse_label_selector("tier!=db, app==web, env in (b, a, b), !canary, x")
    assert str(matcher) == "app=web,!canary,env in (a,b),tier!=db,x"
    assert parse_label_selector(str(matcher)) == matcher
    assert matcher.requirements[0] == Requirement("app", Operator.EQUALS, ("web",))


def test_empty_and_nothing() -> None:
    assert parse_label_selector("").empty
    assert parse_label_selector("") == EVERYTHING
    assert not parse_label_selector("a").empty
    assert not NOTHING.empty
    assert not NOTHING.matches({})
    assert EVERYTHING.matches({"any": "thing"})


def test_matcher_from_selector_message() -> None:
    selector = meta_pb2.LabelSelector(
        match_labels={"app": "web"},
        match_expressions=[
            meta_pb2.LabelSelectorRequirement(key="env", operator="In", values=["prod", "qa"]),
            meta_pb2.LabelSelectorRequirement(key="tier", operator="NotIn", values=["db"]),
            meta_pb2.LabelSelectorRequirement(key="team", operator="Exists"),
            meta_pb2.LabelSelectorRequirement(key="canary", operator="DoesNotExist"),
        ],
    )
    matcher = matcher_from(selector)
    assert matcher.matches({"app": "web", "env": "qa", "team": "x"})
    assert not matcher.matches({"app": "web", "env": "qa"})
    assert not matcher.matches({"app": "web", "env": "qa", "team": "x", "canary": "1"})
    assert not matcher.matches({"app": "web", "env": "qa", "team": "x", "tier": "db"})
    assert matcher == parse_label_selector(
        "app=web,env in (prod,qa),tier notin (db),team,!canary")


def test_matcher_from_empty_matches_everything_and_none_nothing() -> None:
    assert matcher_from(meta_pb2.LabelSelector()).matches({"a": "b"})
    assert matcher_from(meta_pb2.LabelSelector()).empty
    assert not matcher_from(None).matches({})


@pytest.mark.parametrize(("requirement", "message"), [
    (meta_pb2.LabelSelectorRequirement(key="a", operator="Equals", values=["x"]),
     r"matchExpressions\[0\].operator: \"Equals\" is not one of"),
    (meta_pb2.LabelSelectorRequirement(key="a", operator="In"), "needs at least one value"),
    (meta_pb2.LabelSelectorRequirement(key="a", operator="Exists", values=["x"]),
     "takes no values"),
    (meta_pb2.LabelSelectorRequirement(key="", operator="Exists"), "must not be empty"),
])
def test_matcher_from_refuses_bad_expressions(
        requirement: meta_pb2.LabelSelectorRequirement, message: str) -> None:
    with pytest.raises(SelectorError, match=message):
        matcher_from(meta_pb2.LabelSelector(match_expressions=[requirement]))


def test_matcher_from_labels() -> None:
    matcher = matcher_from_labels({"app": "web", "tier": "front"})
    assert matcher.matches(WEB)
    assert not matcher.matches({"app": "web"})
    assert matcher_from_labels({}).empty


# --- hypothesis ------------------------------------------------------------------------

_ALNUM = "abcxyz019"
_name = st.one_of(
    st.text(_ALNUM, min_size=1, max_size=1),
    st.builds(lambda a, b, c: a + b + c, st.sampled_from(_ALNUM),
              st.text(_ALNUM + "-_.", max_size=8), st.sampled_from(_ALNUM)))
_key = st.one_of(_name, st.builds(lambda p, n: f"{p}.com/{n}", st.text("abc", min_size=1,
                                                                          max_size=5), _name))
_value = st.one_of(st.just(""), _name)


@st.composite
def _requirements(draw: st.DrawFn) -> Requirement:
    key = draw(_key)
    op = draw(st.sampled_from(list(Operator)))
    if op in (Operator.EQUALS, Operator.NOT_EQUALS):
        values: tuple[str, ...] = (draw(_value),)
    elif op in (Operator.IN, Operator.NOT_IN):
        values = tuple(sorted(set(draw(st.lists(_value, min_size=1, max_size=4)))))
    else:
        values = ()
    return Requirement(key, op, values)


@given(st.lists(_requirements(), max_size=5))
def test_printed_selectors_parse_back(requirements: list[Requirement]) -> None:
    from scheduler.api.selectors import LabelMatcher

    matcher = LabelMatcher(requirements)
    assert parse_label_selector(str(matcher)) == matcher


@given(st.text(alphabet=st.sampled_from(list("ab=!,() \tinotx-./_")), max_size=30))
def test_parser_never_crashes_on_selector_like_text(text: str) -> None:
    try:
        matcher = parse_label_selector(text)
    except SelectorError:
        return
    assert parse_label_selector(str(matcher)) == matcher


@given(st.text(max_size=40))
def test_parser_never_crashes_on_any_text(text: str) -> None:
    try:
        parse_label_selector(text)
    except SelectorError:
        pass


@given(st.text(max_size=40), st.sampled_from(["Pod", "Node", "Event"]))
def test_field_parser_never_crashes(text: str, kind: str) -> None:
    try:
        matcher = parse_field_selector(text, kind)
    except SelectorError:
        return
    assert parse_field_selector(str(matcher), kind) == matcher


@given(st.dictionaries(_key, _value, max_size=4), st.lists(_requirements(), max_size=4))
def test_matching_is_the_and_of_the_requirements(labels: dict[str, str],
                                                  requirements: list[Requirement]) -> None:
    from scheduler.api.selectors import LabelMatcher

    expected = all(r.matches(labels) for r in requirements)
    assert LabelMatcher(requirements).matches(labels) is expected


# --- field selectors -------------------------------------------------------------------


def _pod(name: str = "web-1", node: str = "node-1", phase: str = "Running",
         namespace: str = "default") -> cluster_pb2.Object:
    pod = pod_pb2.Pod()
    pod.metadata.name, pod.metadata.namespace = name, namespace
    pod.spec.node_name, pod.status.phase = node, phase
    pod.spec.restart_policy = "Always"
    pod.status.pod_ip = "10.88.1.5"
    return cluster_pb2.Object(pod=pod)


@pytest.mark.parametrize(("text", "expected"), [
    ("", True),
    ("spec.nodeName=node-1", True),
    ("spec.nodeName==node-1", True),
    ("spec.nodeName=node-2", False),
    ("spec.nodeName!=node-2", True),
    ("spec.nodeName=", False),
    ("status.phase!=Running", False),
    ("spec.nodeName=node-1,status.phase=Running", True),
    ("spec.nodeName=node-1,status.phase=Pending", False),
    ("metadata.name=web-1", True),
    ("metadata.namespace=default", True),
    ("metadata.namespace=kube-system", False),
    ("status.podIP=10.88.1.5", True),
    ("spec.restartPolicy=Always", True),
    ("spec.hostNetwork=false", True),
    (" spec.nodeName = node-1 ", True),
])
def test_field_selector_on_pods(text: str, expected: bool) -> None:
    assert parse_field_selector(text, "Pod").matches(_pod()) is expected


def test_field_selector_for_unbound_pods() -> None:
    matcher = parse_field_selector("spec.nodeName=", "Pod")
    assert matcher.matches(_pod(node=""))
    assert not matcher.matches(_pod())


def test_field_selector_on_nodes_and_events() -> None:
    node = cluster_pb2.Object(node=node_pb2.Node(spec=node_pb2.NodeSpec(unschedulable=True)))
    assert parse_field_selector("spec.unschedulable=true", "Node").matches(node)
    assert not parse_field_selector("spec.unschedulable=false", "Node").matches(node)
    event = core_pb2.Event(reason="Scheduled", type="Normal")
    event.involved_object.kind, event.involved_object.name = "Pod", "web-1"
    event.involved_object.uid = "u-1"
    obj = cluster_pb2.Object(event=event)
    selector = ("involvedObject.kind=Pod,involvedObject.name=web-1,involvedObject.uid=u-1,"
                "reason=Scheduled,type=Normal")
    assert parse_field_selector(selector, "Event").matches(obj)
    assert not parse_field_selector("type=Warning", "Event").matches(obj)


def test_field_selector_escapes() -> None:
    pod = _pod(phase="a,b=c!d\\e")
    matcher = parse_field_selector(r"status.phase=a\,b\=c\!d\\e", "Pod")
    assert matcher.matches(pod)
    assert parse_field_selector(str(matcher), "Pod") == matcher


def test_field_selector_of_another_kind_never_matches() -> None:
    assert not parse_field_selector("metadata.name=web-1", "Node").matches(_pod())
    assert parse_field_selector("", "Node").matches(_pod())


def test_unknown_field_names_it_and_lists_the_supported_ones() -> None:
    with pytest.raises(SelectorError) as info:
        parse_field_selector("spec.nodeName=a,spec.foo=1", "Pod")
    message = str(info.value)
    assert '"spec.foo" is not a field of Pod' in message
    assert "at position 16" in message
    assert "metadata.name, metadata.namespace" in message and "status.phase" in message


@pytest.mark.parametrize(("text", "message"), [
    ("spec.nodeName", 'expected "field=value"'),
    ("spec.nodeName=a=b", r'"=" in a value must be escaped'),
    ("spec.nodeName=a\\", r"must be followed by"),
    ("spec.nodeName=a,", 'expected "field=value"'),
])
def test_field_selector_syntax_errors(text: str, message: str) -> None:
    with pytest.raises(SelectorError, match=message):
        parse_field_selector(text, "Pod")


def test_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        parse_field_selector("", "Widget")


def test_selectable_fields() -> None:
    assert selectable_fields("Deployment") == ["metadata.name", "metadata.namespace"]
    assert "spec.unschedulable" in selectable_fields("Node")
    assert "involvedObject.uid" in selectable_fields("Event")


def test_field_selector_values_may_hold_an_exclamation_mark() -> None:
    matcher = parse_field_selector("status.phase=Oops!", "Pod")
    assert matcher.matches(_pod(phase="Oops!"))
    assert parse_field_selector(str(matcher), "Pod") == matcher
    assert parse_field_selector(r"status.phase=Oops\!", "Pod") == matcher
