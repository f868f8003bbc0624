"""The coordinator's state machine, sans-I/O: membership, topology, groups, health.

Owns what the control plane knows about a cluster: members (devices and hosts) with their
ids, nodes and endpoints; multicast groups and chains; the regions devices publish (keys
included); the cluster's partition key; each member's last heartbeat and counters. It is
fed decoded requests and ``now`` and returns replies and events; the zmq glue in
``coordinator.py`` moves bytes. Bad requests get an error reply, never an exception.

Requests are dicts with an ``op`` (the table ``HANDLERS`` below); replies are dicts with
``ok`` and either the result or ``error``.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

ROLES = ("device", "host")
FIRST_ID = 1
MAX_ID = 0xFFFE  # 0xFFFF means "any" on the wire


class ControlError(Exception):
    """A request the coordinator refuses; becomes an error reply."""


@dataclass
class Member:
    id: int
    role: str
    node: int
    name: str
    endpoint: tuple[str, int] | None = None  # UDP address of a device
    shm: str | None = None                    # shared-memory name prefix of a device
    info: dict = field(default_factory=dict)  # free-form facts (mem_size, pid, rank...)
    alive: bool = True
    last_seen: float = 0.0
    counters: dict = field(default_factory=dict)

    def public(self) -> dict:
        d = asdict(self)
        d["endpoint"] = list(self.endpoint) if self.endpoint else None
        return d


@dataclass
class ClusterState:
    """Everything the coordinator holds, with the handlers of every request."""

    dead_after: float = 3.0
    pkey: int = field(default_factory=lambda: secrets.randbelow(0xFFFE) + 1)
    cluster: str = "netdam"
    members: dict[int, Member] = field(default_factory=dict)
    groups: dict[int, tuple[int, ...]] = field(default_factory=dict)
    chains: dict[int, tuple[int, ...]] = field(default_factory=dict)   # REDUCE_FWD routes
    regions: dict[str, dict] = field(default_factory=dict)
    grants: dict[int, dict] = field(default_factory=dict)      # rkey -> region granted
    revoked: dict[int, int] = field(default_factory=dict)      # rkey -> device id
    events: list[dict] = field(default_factory=list)  # drained by the glue and published
    next_id: int = FIRST_ID   # ids are not reused (see _fresh_id)
    version: int = 0          # bumped by every change of members, groups or regions

    # -- dispatch -------------------------------------------------------------------

    def handle(self, request: Any, now: float) -> dict:
        """One request in, one reply out. Never raises."""
        try:
            if not isinstance(request, dict):
                raise ControlError("request must be a JSON object")
            op = request.get("op")
            handler = HANDLERS.get(op)
            if handler is None:
                raise ControlError(f"unknown op {op!r}; known: {sorted(HANDLERS)}")
            if "id" in request and op not in ("register",):
                self._touch(request["id"], now)
            return {"ok": True, **handler(self, request, now)}
        except ControlError as exc:
            return {"ok": False, "error": str(exc)}
        except (KeyError, TypeError, ValueError) as exc:
            return {"ok": False, "error": f"bad request: {type(exc).__name__}: {exc}"}

    def _member(self, mid: Any) -> Member:
        if not isinstance(mid, int) or mid not in self.members:
            raise ControlError(f"unknown member id {mid!r}")
        return self.members[mid]

    def _changed(self, event: dict) -> None:
        self.version += 1
        self.events.append(event)

    def _touch(self, mid: Any, now: float) -> None:
        m = self._member(mid)
        m.last_seen = now
        if not m.alive:
            m.alive = True
            self._changed({"event": "alive", "id": m.id})

    # -- health ---------------------------------------------------------------------

    def check_health(self, now: float) -> list[int]:
        """Mark members silent for longer than ``dead_after``; return newly dead ids."""
        dead = []
        for m in self.members.values():
            if m.alive and now - m.last_seen > self.dead_after:
                m.alive = False
                dead.append(m.id)
                self._changed({"event": "dead", "id": m.id, "role": m.role,
                                    "name": m.name})
        return dead

    def next_deadline(self) -> float | None:
        alive = [m.last_seen for m in self.members.values() if m.alive]
        return min(alive) + self.dead_after if alive else None

    # -- handlers ---------------------------------------------------------------------

    def _register(self, req: dict, now: float) -> dict:
        role = req["role"]
        if role not in ROLES:
            raise ControlError(f"role must be one of {ROLES}, not {role!r}")
        node = int(req.get("node", 0))
        want = req.get("want_id")
        if want is not None:
            if not isinstance(want, int) or not FIRST_ID <= want <= MAX_ID:
                raise ControlError(f"want_id {want!r} outside {FIRST_ID}..{MAX_ID}")
            if want in self.members and self.members[want].alive:
                raise ControlError(f"id {want} is taken by {self.members[want].name}")
            mid = want
            self.next_id = max(self.next_id, want + 1)
        else:
            mid = self._fresh_id()
        endpoint = req.get("endpoint")
        if endpoint is not None:
            host, port = endpoint
            endpoint = (str(host), int(port))
        m = Member(id=mid, role=role, node=node, name=str(req.get("name", f"{role}{mid}")),
                   endpoint=endpoint, shm=req.get("shm"), info=dict(req.get("info", {})),
                   last_seen=now)
        self.members[mid] = m
        self._changed({"event": "joined", "id": mid, "role": role, "node": node})
        return {"id": mid, "pkey": self.pkey, "cluster": self.cluster,
                "dead_after": self.dead_after}

    def _fresh_id(self) -> int:
        """An id never handed out before (until the space wraps): a device keeps a replay
        window per sender id, so a new member must not inherit a departed one's."""
        span = MAX_ID - FIRST_ID + 1
        for step in range(span):
            mid = FIRST_ID + (self.next_id - FIRST_ID + step) % span
            if mid not in self.members:
                self.next_id = mid + 1
                return mid
        raise ControlError("no free member id")

    def _heartbeat(self, req: dict, now: float) -> dict:
        m = self._member(req["id"])
        if "counters" in req:
            if not isinstance(req["counters"], dict):
                raise ControlError("counters must be an object")
            m.counters = req["counters"]
        return {"dead": [x.id for x in self.members.values() if not x.alive],
                "version": self.version}

    def _leave(self, req: dict, now: float) -> dict:
        m = self._member(req["id"])
        del self.members[m.id]
        self._changed({"event": "left", "id": m.id})
        return {}

    def _topology(self, req: dict, now: float) -> dict:
        return {"pkey": self.pkey, "cluster": self.cluster, "version": self.version,
                "members": [m.public() | {"counters": {}} for m in self.members.values()],
                "groups": {str(g): list(ms) for g, ms in self.groups.items()},
                "chains": {str(c): list(ms) for c, ms in self.chains.items()},
                "regions": self.regions, "grants": list(self.grants.values()),
                "revoked": [[d, k] for k, d in self.revoked.items()]}

    @staticmethod
    def _table_id(table: dict, wanted, what: str) -> int:
        """The id a group or chain is stored under: the one asked for, else the lowest free."""
        if wanted is None:
            return next(i for i in range(1, 0xFFFF) if i not in table)
        if not isinstance(wanted, int) or not 1 <= wanted < 0xFFFF:
            raise ControlError(f"{what} id {wanted!r} outside 1..65534")
        return wanted

    def _group(self, req: dict, now: float) -> dict:
        members = tuple(int(x) for x in req["members"])
        for x in members:
            self._member(x)
        if not members:
            raise ControlError("a group needs at least one member")
        gid = self._table_id(self.groups, req.get("group"), "group")
        self.groups[gid] = members
        self._changed({"event": "group", "group": gid, "members": list(members)})
        return {"group": gid}

    def _chain(self, req: dict, now: float) -> dict:
        """A named REDUCE_FWD route (SPEC §4.9): packets that carry no route use it."""
        route = tuple(int(x) for x in req["members"])
        if not route:
            raise ControlError("a chain needs at least one device")
        for x in route:
            if self._member(x).role != "device":
                raise ControlError(f"chain member {x} is not a device")
        cid = self._table_id(self.chains, req.get("chain"), "chain")
        self.chains[cid] = route
        self._changed({"event": "chain", "chain": cid, "members": list(route)})
        return {"chain": cid}

    def _region(self, req: dict, now: float) -> dict:
        m = self._member(req["id"])
        name = str(req["name"])
        entry = {"device": m.id, "base": int(req["base"]), "length": int(req["length"]),
                 "rkey": int(req["rkey"]), "rights": int(req.get("rights", 0))}
        self.regions[name] = entry
        self.version += 1
        return {"region": entry}

    def _grant_region(self, req: dict, now: float) -> dict:
        """A new region on a device with a fresh random 32-bit key (the device registers
        it when it next follows the topology). The key goes only to the requester and to
        members that read the topology: authenticate the control plane to keep it so."""
        m = self._member(req["device"])
        if m.role != "device":
            raise ControlError(f"member {m.id} is not a device")
        base, length = int(req["base"]), int(req["length"])
        mem = int(m.info.get("mem_size", 0))
        if base < 0 or length <= 0 or (mem and base + length > mem):
            raise ControlError(f"region [{base}, +{length}) outside device {m.id}'s memory")
        rights = req.get("rights", ["READ", "WRITE", "ATOMIC", "REDUCE"])
        if not isinstance(rights, list) or not all(isinstance(r, str) for r in rights):
            raise ControlError("rights must be a list of names (READ, WRITE, ...)")
        pkey = int(req.get("pkey", self.pkey))
        key = 0
        while key == 0 or key in self.grants or key in self.revoked:
            key = secrets.randbits(32)
        entry = {"device": m.id, "key": key, "base": base, "length": length,
                 "rights": rights, "pkey": pkey}
        self.grants[key] = entry
        self._changed({"event": "grant", "device": m.id})
        return {"region": entry, "version": self.version}

    def _revoke_region(self, req: dict, now: float) -> dict:
        """Revoke a device's region key (granted here or registered at start-up): the
        device deregisters it when it next follows the topology; from then on every
        request naming it, in flight or new, fails BAD_KEY."""
        m = self._member(req["device"])
        key = int(req["key"])
        self.grants.pop(key, None)
        self.revoked[key] = m.id
        self._changed({"event": "revoke", "device": m.id})
        return {"version": self.version}

    def _lookup(self, req: dict, now: float) -> dict:
        name = str(req["name"])
        if name not in self.regions:
            raise ControlError(f"no region named {name!r}")
        return {"region": self.regions[name]}

    def _status(self, req: dict, now: float) -> dict:
        return {"pkey": self.pkey, "cluster": self.cluster, "now": now,
                "members": [m.public() | {"silent_for": round(now - m.last_seen, 3)}
                            for m in self.members.values()]}


#: op -> handler; the whole control protocol (see docs in README "Control plane")
HANDLERS: dict[str, Callable[[ClusterState, dict, float], dict]] = {
    "register": ClusterState._register,
    "heartbeat": ClusterState._heartbeat,
    "leave": ClusterState._leave,
    "topology": ClusterState._topology,
    "group": ClusterState._group,
    "chain": ClusterState._chain,
    "region": ClusterState._region,
    "lookup": ClusterState._lookup,
    "grant_region": ClusterState._grant_region,
    "revoke_region": ClusterState._revoke_region,
    "status": ClusterState._status,
}
