"""Routes follow each topology's rule: shortest way round a ring, dimension order on a
torus, up and down a leaf-spine, one plane per message, scale-up inside a node, and a
host's datagrams cross its PCIe link first."""

import pytest

from netdam.sim.topology import LinkSpec, Topology, squarest

SPEC = dict(fabric=LinkSpec(100, 250), scaleup=LinkSpec(1600, 100), pcie=LinkSpec(200, 900))


def kinds(route):
    return [lk.kind for lk in route]


def test_ring_goes_the_short_way_round():
    t = Topology("ring", 8, **SPEC)
    assert [lk.name for lk in t.route(0, 2)] == ["dev0->dev1", "dev1->dev2"]
    assert [lk.name for lk in t.route(0, 7)] == ["dev0->dev7"]


def test_torus_routes_in_dimension_order_with_wraparound():
    t = Topology("torus2d", 16, **SPEC)
    assert t.shape.dims == (4, 4)
    assert len(t.route(0, 15)) == 2          # one wrap step in each dimension
    assert len(t.route(0, 10)) == 4          # two steps in each dimension
    assert squarest(64, 3) == (4, 4, 4)
    assert len(Topology("torus3d", 64, **SPEC).route(0, 63)) == 3


def test_leaf_spine_same_leaf_is_two_hops_else_four():
    t = Topology("fattree", 8, radix=4, **SPEC)
    assert [lk.name for lk in t.route(0, 3)] == ["dev0->sw0", "sw0->dev3"]
    r = t.route(0, 5)
    assert len(r) == 4 and r[1].name.startswith("sw0->sw") and r[2].name.endswith("->sw1")


def test_multiplane_spreads_messages_over_planes():
    t = Topology("multiplane", 8, radix=4, planes=2, **SPEC)
    a, b = t.route(0, 5, label=0), t.route(0, 5, label=1)
    assert not set(a) & set(b)


def test_scale_up_inside_a_node_fabric_between_nodes():
    t = Topology("fattree", 8, devices_per_node=4, radix=8, **SPEC)
    assert kinds(t.route(0, 3)) == ["scale-up"]
    assert kinds(t.route(0, 4)) == ["fabric", "fabric"]


def test_hosts_reach_the_network_through_their_pcie_link():
    t = Topology("switch", 4, **SPEC)
    assert kinds(t.route(t.host(1), 1)) == ["pcie"]
    assert kinds(t.route(t.host(1), 2)) == ["pcie", "fabric", "fabric"]
    assert kinds(t.route(2, t.host(1))) == ["fabric", "fabric", "pcie"]


@pytest.mark.parametrize("kind,n,opts", [("torus2d", 7, {"dims": (2, 4)}),
                                         ("nowhere", 4, {})])
def test_impossible_shapes_are_refused(kind, n, opts):
    with pytest.raises(ValueError):
        Topology(kind, n, **opts, **SPEC)
