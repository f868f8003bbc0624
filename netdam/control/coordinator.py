"""The coordinator process: ClusterState behind pyzmq sockets (ROUTER + PUB).

Owns the I/O of the control plane: a ROUTER socket answers requests (one JSON object
per message, the reply echoes the request's ``rid``), a PUB socket publishes membership
events (joined, dead, alive, left, group) as JSON under the topic ``event``. Health is
checked on every loop turn. ``netdam coordinator`` runs it; its first stdout line is a
JSON object with both endpoints so a parent process can read them.

With a key directory (``auth=``, ``--auth DIR``) both sockets are CURVE servers and
pyzmq's authenticator admits only the client keys of the allow-list (see ``auth``):
an unauthenticated member never gets a reply, and the rejected handshakes are counted
(``auth_failures`` in the status reply). The coordinator binds loopback unless told
otherwise; another address prints a warning.
"""

from __future__ import annotations

import argparse
import json
import threading
import time

import zmq

from netdam.control.auth import FailureCounter, ServerAuth
from netdam.control.state import ClusterState
from netdam.errors import UsageError
from netdam.signals import stop_on_signals
from netdam.transport.udp import warn_if_exposed

TICK = 0.1  # seconds between health checks when idle


class Coordinator:
    """Serve a ClusterState; ``serve()`` blocks until ``stop()`` (or a signal)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, dead_after: float = 3.0,
                 pkey: int | None = None, cluster: str = "netdam", auth=None):
        if not 0 <= port <= 0xFFFF:
            raise UsageError(f"port {port} outside 0..65535")
        self.state = ClusterState(dead_after=dead_after, cluster=cluster)
        if pkey is not None:
            self.state.pkey = pkey
        self._ctx = zmq.Context()
        self.auth = ServerAuth(self._ctx, auth) if auth is not None else None
        self._router = self._ctx.socket(zmq.ROUTER)
        self._router.setsockopt(zmq.LINGER, 0)
        self._pub = self._ctx.socket(zmq.PUB)
        self._pub.setsockopt(zmq.LINGER, 0)
        self._rejected = None
        if self.auth is not None:
            self.auth.apply(self._router)
            self.auth.apply(self._pub)
            self._rejected = FailureCounter(self._router)
        try:
            if port:
                self._router.bind(f"tcp://{host}:{port}")
            else:
                port = self._router.bind_to_random_port(f"tcp://{host}")
            events_port = self._pub.bind_to_random_port(f"tcp://{host}")
        except zmq.ZMQError as exc:     # (an address not on this host, a port in use)
            self._router.close()
            self._pub.close()
            if self.auth is not None:
                self.auth.stop()
            self._ctx.term()
            raise UsageError(f"cannot bind tcp://{host}:{port}: "
                             f"{zmq.strerror(exc.errno)}") from None
        self.address = f"tcp://{host}:{port}"
        self.events_address = f"tcp://{host}:{events_port}"
        self._stop = threading.Event()
        self.requests = 0
        self.bad_requests = 0

    def stop(self) -> None:
        self._stop.set()

    @property
    def auth_failures(self) -> int:
        """Handshakes the authenticator refused (0 without authentication)."""
        return self._rejected.poll() if self._rejected is not None else 0

    def _reply(self, ident: bytes, raw: bytes) -> None:
        now = time.monotonic()
        try:
            req = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            self.bad_requests += 1
            reply = {"ok": False, "error": f"not JSON: {exc}"}
            req = {}
        else:
            reply = self.state.handle(req, now)
            if not reply["ok"]:
                self.bad_requests += 1
        if isinstance(req, dict) and "rid" in req:
            reply["rid"] = req["rid"]
        if isinstance(req, dict) and req.get("op") == "topology":
            reply["events"] = self.events_address
        if isinstance(req, dict) and req.get("op") == "status":
            reply["auth"] = self.auth is not None
            reply["auth_failures"] = self.auth_failures
        self._router.send_multipart([ident, json.dumps(reply).encode()])

    def serve(self, wake: int | None = None) -> None:
        """``wake``: a file descriptor that ends a wait at once when readable (a stop
        asked for by a signal, ``netdam.signals``)."""
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        if wake is not None:
            poller.register(wake, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                for sock, _ in poller.poll(int(TICK * 1000)):
                    if sock is not self._router:
                        continue          # the wake-up: the loop's test sees the stop
                    frames = self._router.recv_multipart()
                    self.requests += 1
                    if len(frames) != 2:  # a DEALER sends [payload]; ROUTER adds identity
                        self.bad_requests += 1
                        self._router.send_multipart(
                            [frames[0], b'{"ok": false, "error": "expected one frame"}'])
                        continue
                    self._reply(frames[0], frames[1])
                self.state.check_health(time.monotonic())
                while self.state.events:
                    ev = self.state.events.pop(0)
                    self._pub.send_multipart([b"event", json.dumps(ev).encode()])
        finally:
            if self._rejected is not None:
                self._rejected.close()
            self._router.close()
            self._pub.close()
            if self.auth is not None:
                self.auth.stop()
            self._ctx.term()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default loopback; anything else is exposed)")
    p.add_argument("--port", type=int, default=0, help="control port (default: any free)")
    p.add_argument("--dead-after", type=float, default=3.0, metavar="SECONDS",
                   help="a member silent this long is declared dead (default 3)")
    p.add_argument("--cluster", default="netdam", help="cluster name shown in status")
    p.add_argument("--auth", metavar="DIR", default=None,
                   help="require CURVE authentication with the keys in DIR (see "
                        "RELIABILITY.md; default: NETDAM_AUTH, else none)")


def run(args: argparse.Namespace) -> int:
    if args.dead_after <= 0:
        raise UsageError(f"--dead-after must be positive, not {args.dead_after}")
    warn_if_exposed(args.host, "the coordinator")
    from netdam.control.auth import from_env
    coord = Coordinator(args.host, args.port, dead_after=args.dead_after, cluster=args.cluster,
                        auth=args.auth or from_env())
    with stop_on_signals(coord.stop) as wake:
        print(json.dumps({"control": coord.address, "events": coord.events_address,
                          "pkey": coord.state.pkey}), flush=True)
        coord.serve(wake=wake)
    return 0
