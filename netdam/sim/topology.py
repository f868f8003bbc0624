"""Topologies of the simulated network and the routes through them.

Owns which nodes exist, which links join them and the path a datagram takes. Node ids:
device ``r`` is node ``r`` (rank r's device, member id r + 1), host ``r`` is node
``n + r``, switches follow. Every host hangs off its own device by a PCIe link (the
host-to-NIC crossing: ``TimingModel.pcie_crossing_ns`` and ``pcie_gbps``); a host's
datagrams to other devices leave through its device's port. Devices of one node (a
scale-up domain of ``k`` devices) are joined all-to-all by a faster scale-up link; every
device also has its own port(s) on the scale-out fabric, one of:

=============  ==============================================================================
``ring``       device i cabled to i-1 and i+1; shortest way round
``torus2d``    a wrap-around grid, dimension-order routing (``dims`` or the squarest shape)
``torus3d``    the same in three dimensions
``fattree``    leaf-spine: ``radix`` devices per leaf, as many spines, 1:1; a flow keeps
               one spine (ECMP by hash of its ends)
``multiplane`` ``planes`` parallel leaf-spine fabrics, one port per plane on every device;
               each message takes the plane its request id picks (spreads like many QPs)
``switch``     one non-blocking switch (the ideal fabric of the closed-form models)
=============  ==============================================================================

Routes are computed when first asked for and cached, so a large fabric costs only the
pairs that talk.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from netdam.sim.links import Link


@dataclass(frozen=True)
class LinkSpec:
    gbps: float
    latency_ns: float
    queue_bytes: int | None = None
    loss: float = 0.0


def squarest(n: int, ndims: int) -> tuple[int, ...]:
    """The most nearly equal ``ndims`` factors of ``n`` (largest first)."""
    if ndims == 1:
        return (n,)
    best = None
    for a in range(1, int(round(n ** (1 / ndims))) + 2):
        if n % a == 0:
            rest = squarest(n // a, ndims - 1)
            dims = tuple(sorted((a, *rest), reverse=True))
            if best is None or dims[0] < best[0]:
                best = dims
    return best or (n,) + (1,) * (ndims - 1)


class _Ring:
    switches = 0

    def __init__(self, n: int, **_):
        self.n = n

    def path(self, i: int, j: int, label: int) -> list[int]:
        n = self.n
        step = 1 if (j - i) % n <= n // 2 else -1
        out, at = [], i
        while at != j:
            at = (at + step) % n
            out.append(at)
        return out


class _Torus:
    switches = 0

    def __init__(self, n: int, ndims: int = 2, dims: tuple[int, ...] | None = None, **_):
        dims = tuple(dims) if dims else squarest(n, ndims)
        if math.prod(dims) != n:
            raise ValueError(f"torus dims {'x'.join(map(str, dims))} do not hold {n} devices")
        self.dims = dims

    def _coords(self, i: int) -> list[int]:
        out = []
        for d in self.dims:
            i, c = divmod(i, d)
            out.append(c)
        return out

    def _index(self, c: list[int]) -> int:
        i, mul = 0, 1
        for x, d in zip(c, self.dims):
            i += x * mul
            mul *= d
        return i

    def path(self, i: int, j: int, label: int) -> list[int]:
        a, b, out = self._coords(i), self._coords(j), []
        for dim, d in enumerate(self.dims):
            step = 1 if (b[dim] - a[dim]) % d <= d // 2 else -1
            while a[dim] != b[dim]:
                a[dim] = (a[dim] + step) % d
                out.append(self._index(a))
        return out


class _LeafSpine:
    def __init__(self, n: int, radix: int = 32, planes: int = 1, **_):
        if radix < 1 or planes < 1:
            raise ValueError("radix and planes must be at least 1")
        self.n, self.radix, self.planes = n, radix, planes
        self.leaves = -(-n // radix)
        self.spines = radix if self.leaves > 1 else 0
        per_plane = self.leaves + self.spines
        self.switches = per_plane * planes
        self._per_plane = per_plane

    def spine(self, i: int, j: int) -> int:
        """The spine a flow from device i to device j keeps (ECMP by hash of its ends)."""
        return (i * 7919 + j * 104729) % self.spines

    def path(self, i: int, j: int, label: int) -> list[int]:
        """Switch numbers are relative (the topology adds the switch base)."""
        plane = label % self.planes
        base = plane * self._per_plane
        li, lj = i // self.radix, j // self.radix
        if li == lj:
            return [-1 - (base + li), j]
        spine = self.spine(i, j)
        return [-1 - (base + li), -1 - (base + self.leaves + spine), -1 - (base + lj), j]


#: fabric name -> (builder, its options, how labels matter: planes)
FABRICS = {
    "ring": lambda n, o: _Ring(n),
    "torus2d": lambda n, o: _Torus(n, 2, o.get("dims")),
    "torus3d": lambda n, o: _Torus(n, 3, o.get("dims")),
    "fattree": lambda n, o: _LeafSpine(n, o.get("radix", 32)),
    "multiplane": lambda n, o: _LeafSpine(n, o.get("radix", 32), o.get("planes", 2)),
    "switch": lambda n, o: _LeafSpine(n, radix=max(n, 1)),
}


class Topology:
    """Nodes, links and cached routes of one simulated system of ``n`` devices."""

    def __init__(self, kind: str, n: int, *, fabric: LinkSpec, scaleup: LinkSpec,
                 pcie: LinkSpec, devices_per_node: int = 1, seed: int = 0, **options):
        if kind not in FABRICS:
            raise ValueError(f"unknown topology {kind!r}; one of {', '.join(FABRICS)}")
        if n < 1 or devices_per_node < 1 or n % devices_per_node:
            raise ValueError(f"{n} devices do not split into nodes of {devices_per_node}")
        self.kind, self.n, self.k = kind, n, devices_per_node
        self.specs = {"fabric": fabric, "scale-up": scaleup, "pcie": pcie}
        self.shape = FABRICS[kind](n, options)
        self.planes = getattr(self.shape, "planes", 1)
        self._switch_base = 2 * n
        self._rng = random.Random(seed)
        self.links: dict[tuple[int, int], Link] = {}
        self._routes: dict[int, tuple[Link, ...]] = {}
        if isinstance(self.shape, _LeafSpine) and self.planes == 1 and self.k == 1:
            leaves, spines = self.shape.leaves, self.shape.spines
            self._up: list = [None] * n            # device -> its leaf
            self._down: list = [None] * n          # its leaf -> device
            self._to_spine: list = [None] * (leaves * spines)     # leaf * spines + spine
            self._from_spine: list = [None] * (spines * leaves)   # spine * leaves + leaf
            self.route = self._leafspine_route

    # -- naming ------------------------------------------------------------------------
    def host(self, rank: int) -> int:
        return self.n + rank

    def node_name(self, node: int) -> str:
        if node < self.n:
            return f"dev{node}"
        if node < 2 * self.n:
            return f"host{node - self.n}"
        return f"sw{node - self._switch_base}"

    def _link(self, a: int, b: int, kind: str) -> Link:
        link = self.links.get((a, b))
        if link is None:
            s = self.specs[kind]
            link = self.links[(a, b)] = Link(
                f"{self.node_name(a)}->{self.node_name(b)}", kind, s.gbps, s.latency_ns,
                s.queue_bytes, s.loss, random.Random(self._rng.getrandbits(64)))
        return link

    # -- routes ------------------------------------------------------------------------
    def _device_path(self, i: int, j: int, label: int) -> list[Link]:
        if i == j:
            return []
        if self.k > 1 and i // self.k == j // self.k:
            return [self._link(i, j, "scale-up")]
        out, at = [], i
        for nxt in self.shape.path(i, j, label):
            node = nxt if nxt >= 0 else self._switch_base + (-1 - nxt)
            out.append(self._link(at, node, "fabric"))
            at = node
        return out

    def route(self, a: int, b: int, label: int = 0, cache: bool = True) -> tuple[Link, ...]:
        """The links from node ``a`` to node ``b`` (devices and hosts); ``cache=False``
        for a route asked once (not kept)."""
        # one int key (nodes stay below 2**16): a large run caches millions of routes
        key = (a << 16 | b) << 16 | label % self.planes if self.planes > 1 else a << 16 | b
        r = self._routes.get(key)
        if r is None:
            n, hops = self.n, []
            src = a - n if a >= n else a
            dst = b - n if b >= n else b
            if a >= n:
                hops.append(self._link(a, src, "pcie"))
            hops += self._device_path(src, dst, label)
            if b >= n:
                hops.append(self._link(dst, b, "pcie"))
            r = tuple(hops)
            if cache:
                self._routes[key] = r
        return r

    def _leafspine_route(self, a: int, b: int, label: int = 0, cache: bool = True
                         ) -> tuple[Link, ...]:
        """``route`` between two devices of a one-plane leaf-spine (no scale-up): the same
        links, looked up by index and not cached per pair (a 1,024-rank run's multicasts
        ask for a million pairs, each once or twice). Links are made in the same order."""
        n = self.n
        if a >= n or b >= n or a == b:
            return Topology.route(self, a, b, label, cache)
        shape = self.shape
        li, lj = a // shape.radix, b // shape.radix
        up = self._up[a]
        if up is None:
            up = self._up[a] = self._link(a, self._switch_base + li, "fabric")
        if li == lj:
            down = self._down[b]
            if down is None:
                down = self._down[b] = self._link(self._switch_base + lj, b, "fabric")
            return up, down
        spine = shape.spine(a, b)
        i = li * shape.spines + spine
        ls = self._to_spine[i]
        if ls is None:
            ls = self._to_spine[i] = self._link(self._switch_base + li,
                                                self._switch_base + shape.leaves + spine,
                                                "fabric")
        i = spine * shape.leaves + lj
        sl = self._from_spine[i]
        if sl is None:
            sl = self._from_spine[i] = self._link(self._switch_base + shape.leaves + spine,
                                                  self._switch_base + lj, "fabric")
        down = self._down[b]
        if down is None:
            down = self._down[b] = self._link(self._switch_base + lj, b, "fabric")
        return up, ls, sl, down

    def describe(self) -> str:
        dims = getattr(self.shape, "dims", None)
        extra = f" {'x'.join(map(str, dims))}" if dims else ""
        if self.planes > 1:
            extra += f", {self.planes} planes"
        node = f", {self.n // self.k} nodes of {self.k}" if self.k > 1 else ""
        return f"{self.kind}{extra}{node}"


__all__ = ["FABRICS", "LinkSpec", "Topology", "squarest"]
