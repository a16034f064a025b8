import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contract.host_api import VfRequest
from vm_side.demand import (
    ANNOTATION,
    DemandDefaults,
    DemandError,
    Mode,
    PodDemand,
    parse_demand,
)
from vm_side.demand import (
    KEYS as DEMAND_KEYS,
)

D = DemandDefaults(pool="default", mode=Mode.KERNEL, max_vfs_per_pod=4, mtu=1500)


def parse(value: object) -> PodDemand | None:
    text = value if isinstance(value, str) else json.dumps(value)
    return parse_demand({ANNOTATION: text}, D)


def test_no_annotation_is_no_demand():
    assert parse_demand({"other": "2"}, D) is None


def test_integer_means_default_pool_and_mode_with_generated_names():
    demand = parse(" 2 ")
    assert demand is not None
    assert [(s.pool, s.mode, s.ifname, s.mtu) for s in demand.slots] == [
        ("default", Mode.KERNEL, "net1", 1500),
        ("default", Mode.KERNEL, "net2", 1500),
    ]
    assert demand.host_requests() == [VfRequest(pool="default", count=2)]


def test_list_with_every_key():
    demand = parse(
        [
            {
                "pool": "fast",
                "count": 2,
                "mode": "dpdk",
                "vlan": 100,
                "trust": True,
                "spoofchk": False,
                "min_tx_rate_mbps": 10,
                "max_tx_rate_mbps": 100,
                "numa": 1,
            },
            {"ifname": "net1", "mac": "02:AA:00:00:00:01", "ip": "10.0.0.2/24", "mtu": 9000},
        ]
    )
    assert demand is not None
    first, second, third = demand.slots
    # The explicit net1 is taken, so generated names skip it.
    assert (first.ifname, second.ifname, third.ifname) == ("net2", "net3", "net1")
    assert first.mode is Mode.DPDK and first.mtu is None
    assert (third.mac, third.ip, third.mtu) == ("02:aa:00:00:00:01", "10.0.0.2/24", 9000)
    assert demand.host_requests() == [
        VfRequest(
            pool="fast",
            count=2,
            vlan=100,
            trust=True,
            spoofchk=False,
            min_tx_rate_mbps=10,
            max_tx_rate_mbps=100,
            numa=1,
        ),
        VfRequest(pool="default", count=1, mac="02:aa:00:00:00:01"),
    ]


@pytest.mark.parametrize(
    ("value", "index", "field"),
    [
        ([{"colour": "red"}], 0, "colour"),
        ([{}, {"count": "2"}], 1, "count"),
        ([{"count": True}], 0, "count"),
        ([{"count": 0}], 0, "count"),
        ([{"count": 5}], 0, "count"),
        ([{"ifname": "a"}, {"ifname": "a"}], 1, "ifname"),
        ([{"ifname": "much-too-long-name"}], 0, "ifname"),
        ([{"ifname": "a/b"}], 0, "ifname"),
        ([{"mac": "02:00:00:00:00"}], 0, "mac"),
        ([{"mac": "01:00:5e:00:00:01"}], 0, "mac"),
        ([{"vlan": 4095}], 0, "vlan"),
        ([{"vlan": -1}], 0, "vlan"),
        ([{"ip": "10.0.0.2"}], 0, "ip"),
        ([{"ip": "10.0.0.300/24"}], 0, "ip"),
        ([{"ip": "10.0.0.0/24"}], 0, "ip"),
        ([{"mtu": 67}], 0, "mtu"),
        ([{"mtu": 1500.0}], 0, "mtu"),
        ([{"mode": "sriov"}], 0, "mode"),
        ([{"mode": "dpdk", "ip": "10.0.0.2/24"}], 0, "ip"),
        ([{"count": 2, "mac": "02:00:00:00:00:01"}], 0, "mac"),
        ([{"pool": ""}], 0, "pool"),
        ([{"min_tx_rate_mbps": 50, "max_tx_rate_mbps": 10}], 0, "min_tx_rate_mbps"),
        ([{"numa": -1}], 0, "numa"),
        ([{}, "x"], 1, None),
    ],
)
def test_bad_requests_name_index_and_field(value, index, field):
    with pytest.raises(DemandError) as err:
        parse(value)
    assert (err.value.index, err.value.field) == (index, field)
    assert str(err.value).startswith(f"{ANNOTATION} request {index}")
    if field:
        assert repr(field) in str(err.value)


@pytest.mark.parametrize(
    "text", ["0", "5", "[]", "{}", "two", "[{}, {}, {}, {}, {}]", "NaN", "[1e400]", "-1"]
)
def test_bad_annotations(text):
    with pytest.raises(DemandError, match=ANNOTATION):
        parse(text)


def test_per_pod_limit_counts_all_requests():
    with pytest.raises(DemandError, match="over the per-pod limit of 4"):
        parse([{"count": 3}, {"count": 2}])


def test_unknown_pool_when_the_config_lists_pools():
    d = DemandDefaults(pool="default", pools=frozenset({"default"}))
    with pytest.raises(DemandError, match="unknown pool 'x'"):
        parse_demand({ANNOTATION: '[{"pool": "x"}]'}, d)


def test_deeply_nested_json_is_a_demand_error():
    with pytest.raises(DemandError):
        parse("[" * 100_000)


@pytest.mark.parametrize(
    ("value", "index", "field", "says"),
    [
        ("-1", 0, "count", "-1 is negative; ask for 1..4 VFs"),
        ([{"count": -3}], 0, "count", "-3 is negative"),
        ([{"count": 0}], 0, "count", "0 asks for no VF"),
        ("99999999999", 0, "count", "99999999999 is over the per-pod limit of 4 (pods.max_vfs_per_pod)"),
        ([{"count": 10**20}], 0, "count", "is over the per-pod limit"),
        ([{"count": True}], 0, "count", "expected an integer, got boolean true"),
        ([{"count": "2"}], 0, "count", 'got string "2"; write 2 without quotes'),
        ([{"count": 2.0}], 0, "count", "got number 2.0; write 2"),
        ([{"trust": 1}], 0, "trust", "expected true or false, got integer 1"),
        ([{"spoofchk": "false"}], 0, "spoofchk", "write false without quotes"),
        ([{"pool": ["a"]}], 0, "pool", 'expected a string, got list ["a"]'),
        ([{"vlna": 5}], 0, "vlna", "did you mean 'vlan'?"),
        ([{"vlan": -1}], 0, "vlan", "-1 is negative; a VLAN id is in 0..4094"),
        ([{"numa": 4096}], 0, "numa", "4096 is above 1023"),
        ([{"max_tx_rate_mbps": 2**32}], 0, "max_tx_rate_mbps", "is above 1000000"),
        ([{"min_tx_rate_mbps": -5}], 0, "min_tx_rate_mbps", "-5 is negative"),
        ([{"mode": "vpp", "mtu": 1500}], 0, "mtu", "in vpp mode the VM's VPP owns the port"),
        ([{"mode": "vpp", "ip": "10.0.0.2/24"}], 0, "ip", "is for kernel mode"),
        ([{"ifname": "lo"}], 0, "ifname", "'lo' is the loopback"),
        ([{}, 7], 1, None, 'expected a JSON object like {"count": 1}, got integer 7'),
    ],
)
def test_messages_name_the_field_the_value_and_the_fix(value, index, field, says):
    with pytest.raises(DemandError) as err:
        parse(value)
    assert (err.value.index, err.value.field) == (index, field)
    assert says in str(err.value), str(err.value)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('[{"count": 2, "count": 1}]', "request 0 field 'count': is given twice"),
        ('[{}, {"pool": "a", "mode": "dpdk", "pool": "b"}]', "request 1 field 'pool': is given twice"),
        ('{"count": 2}', 'give a list of requests, e.g. [{"count": 2}]'),
        ("true", "got boolean true"),
        ("null", "got null"),
        ("1.5", "got number 1.5"),
        ("[" + "9" * 5000 + "]", "an integer of 5000 digits is out of range"),
        ('[{"count": ' + "1" * 5000 + "}]", "an integer of 5000 digits is out of range"),
    ],
)
def test_whole_annotation_mistakes(text, says):
    with pytest.raises(DemandError) as err:
        parse(text)
    assert says in str(err.value), str(err.value)


def test_names_taken_in_the_pod_netns():
    taken = frozenset({"lo", "eth0", "net1"})

    def names(value: object) -> list[str]:
        demand = parse_demand({ANNOTATION: json.dumps(value)}, D, taken)
        assert demand is not None
        return [s.ifname for s in demand.slots]

    with pytest.raises(DemandError) as err:
        names([{}, {"ifname": "eth0"}])
    assert (err.value.index, err.value.field) == (1, "ifname")
    assert "'eth0' already exists in the pod's network namespace (it has eth0, lo, net1)" in str(err.value)
    assert names([{"count": 2}]) == ["net2", "net3"]
    # A dpdk or vpp VF never enters the netns: its name is a label only.
    assert names([{"mode": "dpdk", "ifname": "eth0"}, {}]) == ["eth0", "net2"]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
KEYS = st.sampled_from([*sorted(DEMAND_KEYS), "bogus"])
VALUES = st.one_of(
    st.integers(-2, 5000),
    st.integers(),  # huge and negative ones too
    st.booleans(),
    st.none(),
    st.sampled_from(
        ["kernel", "dpdk", "vpp", "fast", "10.1.2.3/8", "02:00:00:00:00:09", "net1", "eth0", "::1/64"]
    ),
    st.text(max_size=6),
)
REQUESTS = st.lists(st.dictionaries(KEYS, VALUES, max_size=5), max_size=5)


def _check(text: str) -> None:
    try:
        demand = parse_demand({ANNOTATION: text}, D)
    except DemandError:
        return
    assert demand is not None
    assert 1 <= len(demand.slots) <= D.max_vfs_per_pod
    names = [s.ifname for s in demand.slots]
    assert len(set(names)) == len(names) and all(names)
    assert sum(r.count for r in demand.host_requests()) == len(demand.slots)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_text_is_demand_or_demand_error(text):
    _check(text)


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_any_json_is_demand_or_demand_error(value):
    _check(json.dumps(value))


@settings(max_examples=500, deadline=None)
@given(REQUESTS)
def test_request_shaped_json_is_demand_or_demand_error(value):
    _check(json.dumps(value))
