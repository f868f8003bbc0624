"""Control-plane authentication with ZeroMQ CURVE (pyzmq's ``zmq.auth``).

Owns the key directory, creating it, and turning it into socket options: the
coordinator is a CURVE server whose ``zmq.auth.ThreadAuthenticator`` admits only the
client public keys found in an allow-list folder; a member (device, host, tool) is a
CURVE client that knows the coordinator's public key and holds a keypair of its own.
Without a key directory the control plane is open (loopback only, by default).

A key directory (``create_keys``) holds::

    coordinator.key          the coordinator's public certificate (members need it)
    coordinator.key_secret   its secret certificate (only the coordinator reads it)
    member.key               a member keypair (public half)
    member.key_secret        a member keypair (secret half: the members' credentials)
    allowed/                 public certificates of every admitted client (allow-list)

Another client is admitted by creating a keypair for it (``create_keys(dir,
clients=[name])`` or ``zmq.auth.create_certificates``) and copying its ``NAME.key`` into
``allowed/``; it is revoked by deleting that file (the authenticator rereads the folder
when ``ServerAuth.reload`` is called). A member names its keypair with
``NETDAM_AUTH_NAME`` (default ``member``).

The handshake failure a rejected client sees is reported by ``HandshakeWatch`` so that
the client fails at once with a readable reason instead of waiting for a timeout.

``zmq.auth`` and the monitor helpers are imported where keys are made, read or watched:
every member imports this module, and those imports (asyncio among them) cost a process
that does not authenticate about 50 ms at start.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import zmq

SERVER = "coordinator"
DEFAULT_CLIENT = "member"
ALLOWED = "allowed"
ENV_DIR, ENV_NAME = "NETDAM_AUTH", "NETDAM_AUTH_NAME"

#: handshake failure event -> what it means for the client
_FAILURES = {
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "the coordinator rejected this client's CURVE key "
                                     "(not in its allow-list)",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "security handshake failed: the coordinator "
                                         "requires CURVE authentication (pass --auth DIR or "
                                         "set NETDAM_AUTH) or does not use it",
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "security handshake failed: the coordinator "
                                          "requires CURVE authentication (pass --auth DIR "
                                          "or set NETDAM_AUTH) or does not use it",
}
#: most specific first: when several failures are reported, the first of these wins
_PRIORITY = (zmq.EVENT_HANDSHAKE_FAILED_AUTH, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
             zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


def create_keys(directory: str | os.PathLike, clients=(DEFAULT_CLIENT,)) -> Path:
    """Create a key directory: the coordinator's keypair (unless present) and one
    admitted keypair per name in ``clients``. Secret files are mode 0600."""
    import zmq.auth
    d = Path(directory)
    (d / ALLOWED).mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    if not (d / f"{SERVER}.key_secret").exists():
        zmq.auth.create_certificates(d, SERVER)
    for name in clients:
        public, secret = zmq.auth.create_certificates(d, name)
        os.chmod(secret, 0o600)
        shutil.copy(public, d / ALLOWED / Path(public).name)
    os.chmod(d / f"{SERVER}.key_secret", 0o600)
    return d


def from_env(environ=None) -> str | None:
    """The key directory named by NETDAM_AUTH, or None (no authentication)."""
    env = os.environ if environ is None else environ
    return env.get(ENV_DIR) or None


def env_for(directory: str | os.PathLike | None, name: str = DEFAULT_CLIENT) -> dict:
    """The environment that makes a child process use ``directory``'s keypair ``name``."""
    if directory is None:
        return {}
    return {ENV_DIR: str(directory), ENV_NAME: name}


def _load(path: Path, secret: bool) -> tuple[bytes, bytes | None]:
    if not path.is_file():
        from netdam.errors import UsageError
        raise UsageError(f"no CURVE certificate {path} (create keys with "
                         f"`python -m netdam.control.auth DIR`)")
    import zmq.auth
    public, sec = zmq.auth.load_certificate(path)
    if secret and sec is None:
        from netdam.errors import UsageError
        raise UsageError(f"{path} holds no secret key")
    return public, sec


@dataclass(frozen=True)
class ClientKeys:
    """What a CURVE client needs: the server's public key and its own keypair."""

    server_public: bytes
    public: bytes
    secret: bytes

    @classmethod
    def load(cls, directory: str | os.PathLike, name: str | None = None) -> "ClientKeys":
        d = Path(directory)
        name = name or os.environ.get(ENV_NAME) or DEFAULT_CLIENT
        server_public, _ = _load(d / f"{SERVER}.key", secret=False)
        public, secret = _load(d / f"{name}.key_secret", secret=True)
        return cls(server_public, public, secret)

    def apply(self, sock: zmq.Socket) -> None:
        sock.curve_serverkey = self.server_public
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret


def client_keys(auth) -> ClientKeys | None:
    """``auth`` as ClientKeys: None, a key directory, or ClientKeys already."""
    if auth is None or isinstance(auth, ClientKeys):
        return auth
    return ClientKeys.load(auth)


class ServerAuth:
    """The coordinator's side: its keypair and an authenticator thread on ``ctx`` that
    admits the public keys in ``allowed/``. ``apply(sock)`` before ``bind``."""

    def __init__(self, ctx: zmq.Context, directory: str | os.PathLike):
        d = Path(directory)
        self.public, self.secret = _load(d / f"{SERVER}.key_secret", secret=True)
        self.allowed = d / ALLOWED
        if not self.allowed.is_dir():
            from netdam.errors import UsageError
            raise UsageError(f"{self.allowed} is missing: the allow-list of client keys")
        from zmq.auth.thread import ThreadAuthenticator
        self._auth = ThreadAuthenticator(ctx)
        self._auth.start()
        self.reload()

    def reload(self) -> None:
        """Reread the allow-list folder (after adding or deleting a client's key)."""
        self._auth.configure_curve(domain="*", location=str(self.allowed))

    def apply(self, sock: zmq.Socket) -> None:
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True

    def stop(self) -> None:
        self._auth.stop()


class HandshakeWatch:
    """Watches one socket's security handshake; ``failure()`` returns the reason a
    handshake failed since the last call (None if none did)."""

    _EVENTS = 0
    for _ev in _FAILURES:
        _EVENTS |= _ev

    def __init__(self, sock: zmq.Socket):
        from zmq.utils.monitor import recv_monitor_message
        self._event = recv_monitor_message
        self._sock = sock
        self.monitor = sock.get_monitor_socket(self._EVENTS)

    def failure(self, settle: float = 0.05) -> str | None:
        """After a first event, waits ``settle`` s for the rest of the handshake's
        events and reports the most specific."""
        seen = set()
        while self.monitor.poll(int(settle * 1000) if seen else 0):
            seen.add(self._event(self.monitor)["event"])
        for ev in _PRIORITY:
            if ev in seen:
                return _FAILURES[ev]
        return None

    def close(self) -> None:
        try:
            self._sock.disable_monitor()
        except zmq.ZMQError:
            pass
        self.monitor.close()


class FailureCounter(HandshakeWatch):
    """The coordinator's count of rejected handshakes on a socket."""

    def __init__(self, sock: zmq.Socket):
        super().__init__(sock)
        self.count = 0

    def poll(self) -> int:
        while self.monitor.poll(0):
            if self._event(self.monitor)["event"] in _FAILURES:
                self.count += 1
        return self.count


__all__ = ["create_keys", "from_env", "env_for", "ClientKeys", "client_keys", "ServerAuth",
           "HandshakeWatch", "FailureCounter", "SERVER", "DEFAULT_CLIENT", "ALLOWED"]


def main(argv=None) -> int:
    """``python -m netdam.control.auth DIR [NAME ...]``: create a key directory."""
    import sys
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m netdam.control.auth DIR [CLIENT_NAME ...]", file=sys.stderr)
        return 2
    d = create_keys(args[0], args[1:] or (DEFAULT_CLIENT,))
    print(f"keys in {d}: give members {SERVER}.key and their own NAME.key_secret; "
          f"admitted public keys are in {d / ALLOWED}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
