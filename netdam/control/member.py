"""A device process's membership: register, heartbeat, follow the topology.

Owns the control-plane side of a device: it registers the device with the coordinator
under its id (with the JSON it announces: endpoint, regions, shared memory), sends a
heartbeat carrying the device's counters, and follows membership events so that the
device learns where the other devices are (for REDUCE_FWD and multicast forwarding)
and which multicast groups exist, and applies the region keys the coordinator grants
and revokes (``set_regions``); its heartbeat reports the topology version it follows,
so a revoker can wait until the device has dropped a key. It runs in one background
thread; the updates it
makes to the device server (whole dict entries and tuples replaced, never mutated in
place) are atomic for the device's loop thread.
"""

from __future__ import annotations

import os
import threading
from typing import Callable

from netdam.control.client import ControlClient, ControlError, ControlTimeout


class DeviceMember:
    def __init__(self, coordinator: str, info: dict, node: int, *,
                 set_peers: Callable[[dict], None], set_group: Callable[[int, list], None],
                 counters: Callable[[], dict], set_chain: Callable[[int, list], None] | None = None,
                 set_regions: Callable[[list, list], None] | None = None,
                 interval: float = 0.5, auth=None):
        self.coordinator, self.info, self.node = coordinator, info, node
        self._set_peers, self._set_group, self._counters = set_peers, set_group, counters
        self._set_chain = set_chain
        self._set_regions = set_regions
        self.auth = auth
        self.chains: dict[int, tuple[int, ...]] = {}
        self.interval = interval
        self.groups: dict[int, tuple[int, ...]] = {}
        self.version = -1   # the topology version last applied
        self.errors = 0     # unexpected errors in the member thread (reported, survived)
        self.last_error = ""
        self._stop = threading.Event()
        # written by close(): ends the thread's wait for events at once, so a device
        # stops in milliseconds, not up to an interval later
        self._wake_r, self._wake_w = os.pipe()
        self.client = ControlClient(coordinator, timeout=5.0, auth=auth)
        reply = self.client.register("device", node=node, want_id=int(info["id"]),
                                     endpoint=[info["host"], info["port"]], info=info,
                                     name=f"device{info['id']}")
        self.pkey = reply["pkey"]
        self._refresh(self.client)
        self._thread = threading.Thread(target=self._run, name="netdam-member", daemon=True)
        self._thread.start()

    def _refresh(self, client: ControlClient) -> None:
        topo = client.topology()
        me = int(self.info["id"])
        peers = {m["id"]: m["endpoint"] for m in topo["members"]
                 if m["role"] == "device" and m.get("endpoint")}
        self._set_peers(peers)
        for gid, members in topo["groups"].items():
            members = tuple(members)
            if self.groups.get(int(gid)) != members:
                self._set_group(int(gid), list(members))
                self.groups[int(gid)] = members
        for cid, route in topo.get("chains", {}).items():
            route = tuple(route)
            if self._set_chain is not None and self.chains.get(int(cid)) != route:
                self._set_chain(int(cid), list(route))
                self.chains[int(cid)] = route
        if self._set_regions is not None:
            self._set_regions([g for g in topo.get("grants", []) if g["device"] == me],
                              [k for d, k in topo.get("revoked", []) if d == me])
        self.version = topo["version"]   # last: a waiter sees it only once all applied

    def heartbeat_counters(self) -> dict:
        c = dict(self._counters())
        c["groups"] = sorted(self.groups)
        c["chains"] = sorted(self.chains)
        c["topology"] = self.version
        c["member_errors"] = self.errors
        return c

    def _run(self) -> None:
        client = ControlClient(self.coordinator, timeout=max(self.interval * 4, 1.0),
                               auth=self.auth)
        events = None
        try:
            events = client.events()
            while not self._stop.is_set():
                try:
                    reply = client.request("heartbeat", id=int(self.info["id"]),
                                           counters=self.heartbeat_counters())
                    if reply["version"] != self.version:   # an event we may have missed
                        self._refresh(client)   # (one published before our SUB joined)
                        continue                # and report it now, not an interval later
                    ev = events.next(self.interval, wake=self._wake_r)
                    if self._stop.is_set():
                        break
                    changed = ev is not None
                    while ev is not None:  # drain a burst of events, refresh once
                        ev = events.next(0.0)
                    if changed:
                        self._refresh(client)
                except (ControlTimeout, ControlError):
                    self._stop.wait(self.interval)
                except Exception as exc:   # noqa: BLE001 - a bug must not stop heartbeats
                    self.errors += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    self._stop.wait(self.interval)
        finally:
            if events is not None:
                events.close()
            client.close()

    def close(self) -> None:
        self._stop.set()
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=5.0)
        os.close(self._wake_r)
        os.close(self._wake_w)
        self.client.timeout = 1.0
        self.client.leave()
        self.client.close()
