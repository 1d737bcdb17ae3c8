"""Flattening just the fields a query reads gives what flattening everything gives for them."""

from hypothesis import given, settings
from hypothesis import strategies as st

from auditwatch.audit.decode import flatten

keys = st.sampled_from(["a", "b", "a.b", "c{}", "x.y.z", "user", "groups", "a{}"])
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 500), st.text("ab:1", max_size=3))
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=3)),
    max_leaves=12,
)
events = st.dictionaries(keys, json_values, max_size=4)
names = st.lists(
    st.sampled_from(["a", "a.b", "a.b.b", "a{}", "a{}.b", "c{}", "c{}{}", "x.y.z", "nope", "a.a.b", "a{}{}", "c{}.a"]),
    max_size=5,
)


@settings(max_examples=1000, deadline=None)
@given(event=events, wanted=names)
def test_flatten_only_equals_flatten_restricted(event, wanted):
    full = {k: sorted(v) for k, v in flatten(event).items() if k in wanted}
    assert {k: sorted(v) for k, v in flatten(event, frozenset(wanted)).items()} == full


def test_dotted_keys_and_arrays_of_objects():
    key = "requestObject.metadata.annotations.kubectl.kubernetes.io/last-applied-configuration"
    ev = {
        "requestObject": {"metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}}},
        "spec": {"containers": [{"image": "a"}, {"image": "b"}, {"name": "c"}]},
    }
    assert flatten(ev, frozenset([key, "spec.containers{}.image"])) == {
        key: ["{}"],
        "spec.containers{}.image": ["a", "b"],
    }
