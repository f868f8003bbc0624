"""ControlClient: a member's side of the control plane (pyzmq DEALER + SUB).

Owns request/reply with a bound wait (every request carries an ``rid``; a reply to an
older request is discarded), the background heartbeat that publishes a member's counters,
and the subscription to membership events. A coordinator that does not answer raises
ControlTimeout; a refused request raises ControlError with the coordinator's reason; a
coordinator that refuses our credentials (CURVE, see ``auth``) raises ControlAuthError
as soon as the handshake fails.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from typing import Callable

import zmq

from netdam.control.auth import ClientKeys, HandshakeWatch, client_keys
from netdam.errors import NetdamError


class ControlError(NetdamError):
    """The coordinator refused a request."""


class ControlTimeout(NetdamError, TimeoutError):
    """The coordinator did not answer within the bound."""


class ControlAuthError(ControlError):
    """The coordinator did not admit this client (CURVE handshake failed)."""


class ControlClient:
    """Talk to a coordinator at ``address`` (``tcp://host:port``).

    ``auth``: None (no authentication), a key directory or ``ClientKeys``: the
    coordinator's public key and this client's keypair (see ``netdam.control.auth``).
    Not thread-safe, like the zmq socket inside; the heartbeat thread owns its own.
    """

    def __init__(self, address: str, *, timeout: float = 5.0,
                 auth: "str | ClientKeys | None" = None):
        self.address = address
        self.timeout = timeout
        self.keys = client_keys(auth)
        self._ctx = zmq.Context.instance()
        self._watch: HandshakeWatch | None = None
        self._sock = self._connect()
        self._rids = itertools.count(1)
        self._hb_thread: threading.Thread | None = None
        self._hb_stop = threading.Event()
        self.id: int | None = None
        self.pkey: int | None = None

    def _connect(self) -> zmq.Socket:
        s = self._ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        if self.keys is not None:
            self.keys.apply(s)
        self._watch = HandshakeWatch(s)
        s.connect(self.address)
        return s

    def request(self, op: str, **fields) -> dict:
        rid = next(self._rids)
        self._sock.send(json.dumps({"op": op, "rid": rid, **fields}).encode())
        deadline = time.monotonic() + self.timeout
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        poller.register(self._watch.monitor, zmq.POLLIN)
        while (left := deadline - time.monotonic()) > 0:
            ready = dict(poller.poll(int(left * 1000) + 1))
            failure = self._watch.failure() if self._watch.monitor in ready else None
            if failure:
                raise ControlAuthError(f"coordinator at {self.address}: {failure}")
            if self._sock not in ready:
                continue
            reply = json.loads(self._sock.recv())
            if reply.get("rid") != rid:
                continue  # a late answer to a request that already timed out
            if not reply.get("ok"):
                raise ControlError(f"coordinator refused {op}: {reply.get('error')}")
            return reply
        raise ControlTimeout(f"coordinator at {self.address} did not answer {op!r} "
                             f"within {self.timeout:g} s")

    # -- membership ---------------------------------------------------------------------

    def register(self, role: str, **fields) -> dict:
        reply = self.request("register", role=role, **fields)
        self.id, self.pkey = reply["id"], reply["pkey"]
        return reply

    def start_heartbeat(self, interval: float, counters: Callable[[], dict] | None = None):
        """Send a heartbeat (with counters) every ``interval`` seconds from a thread."""
        if self.id is None:
            raise ControlError("register before starting the heartbeat")
        mid = self.id

        def beat() -> None:
            client = ControlClient(self.address, timeout=max(interval, 1.0), auth=self.keys)
            try:
                while not self._hb_stop.wait(interval):
                    try:
                        client.request("heartbeat", id=mid,
                                       counters=counters() if counters else {})
                    except (ControlTimeout, ControlError):
                        continue
            finally:
                client.close()

        self._hb_thread = threading.Thread(target=beat, name="netdam-heartbeat", daemon=True)
        self._hb_thread.start()

    def topology(self) -> dict:
        return self.request("topology")

    def status(self) -> dict:
        return self.request("status")

    def grant_region(self, device: int, base: int, length: int, *,
                     rights=("READ", "WRITE", "ATOMIC", "REDUCE"), pkey: int | None = None,
                     wait: float | None = None) -> dict:
        """A new region on ``device`` under a fresh random key (the region dict: key,
        base, length, rights, pkey). With ``wait``, returns once the device applied it."""
        fields = {"device": device, "base": base, "length": length, "rights": list(rights)}
        if pkey is not None:
            fields["pkey"] = pkey
        reply = self.request("grant_region", **fields)
        if wait is not None:
            self.wait_applied(device, reply["version"], wait)
        return reply["region"]

    def revoke_region(self, device: int, key: int, *, wait: float | None = None) -> None:
        """Revoke ``key`` on ``device``; with ``wait``, return once the device dropped it."""
        reply = self.request("revoke_region", device=device, key=key)
        if wait is not None:
            self.wait_applied(device, reply["version"], wait)

    def wait_applied(self, device: int, version: int, timeout: float) -> None:
        """Wait until ``device`` reports it follows topology ``version`` or later."""
        deadline = time.monotonic() + timeout
        while True:
            members = {m["id"]: m for m in self.status()["members"]}
            if members.get(device, {}).get("counters", {}).get("topology", -1) >= version:
                return
            if time.monotonic() > deadline:
                raise ControlTimeout(f"device {device} did not apply topology version "
                                     f"{version} within {timeout:g} s")
            time.sleep(0.02)

    def events(self, events_address: str | None = None) -> "EventStream":
        addr = events_address or self.topology()["events"]
        return EventStream(self._ctx, addr, self.keys)

    def close(self) -> None:
        self._hb_stop.set()
        if self._hb_thread is not None:
            self._hb_thread.join(timeout=2.0)
        if self._watch is not None:
            self._watch.close()
        self._sock.close()

    def leave(self) -> None:
        if self.id is not None:
            try:
                self.request("leave", id=self.id)
            except (ControlError, ControlTimeout):
                pass


class EventStream:
    """Membership events published by the coordinator (joined, dead, alive, left, group)."""

    def __init__(self, ctx: zmq.Context, address: str, keys: ClientKeys | None = None):
        self._sock = ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        if keys is not None:
            keys.apply(self._sock)
        self._sock.setsockopt(zmq.SUBSCRIBE, b"event")
        self._sock.connect(address)

    def next(self, timeout: float, *, wake: int | None = None) -> dict | None:
        """The next event, or None after ``timeout`` seconds; or None as soon as the
        file descriptor ``wake`` is readable (another thread ends the wait: the caller
        drains it)."""
        if wake is None:
            ready = self._sock.poll(int(timeout * 1000))
        else:
            poller = zmq.Poller()
            poller.register(self._sock, zmq.POLLIN)
            poller.register(wake, zmq.POLLIN)
            ready = dict(poller.poll(int(timeout * 1000))).get(self._sock)
        if not ready:
            return None
        _topic, body = self._sock.recv_multipart()
        return json.loads(body)

    def close(self) -> None:
        self._sock.close()
