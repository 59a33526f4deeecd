"""CURVE for tcp (libzmq's): key pairs in a private directory, the engine's authenticator, clients' keys.

Every tcp endpoint is CURVE, loopback included: any local user can reach 127.0.0.1,
while only we can read our 0700 key directory.  The directory is the runtime
directory's ``keys/``, or $EPC_PLAYGROUND_KEYS; in it the server and client pairs,
``NAME.key`` (public) and ``NAME.key_secret``, each 0600.  The engine authorises every
``*.key`` public key there when it starts; a client loads ``server.key`` and the client
pair.  ipc needs none of this: its socket is 0600 in a 0700 directory.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from engined import runtime

KEYS_ENV = "EPC_PLAYGROUND_KEYS"
SERVER, CLIENT = "server", "client"


@dataclass(frozen=True, slots=True)
class ServerKeys:
    """The engine's pair, and the directory whose ``*.key`` files are the clients it lets in."""

    public: bytes
    secret: bytes
    directory: str


def keys_dir() -> str:
    """Where the keys are: $EPC_PLAYGROUND_KEYS, else the runtime directory's keys/."""
    return os.environ.get(KEYS_ENV) or os.path.join(runtime.runtime_dir(), "keys")


def _files(directory: str, name: str) -> tuple[str, str]:
    base = os.path.join(directory, name)
    return f"{base}.key", f"{base}.key_secret"


def make_keys(directory: str | None = None) -> list[str]:
    """Make the server and client pairs in ``directory`` (default keys_dir(), 0700) where missing.

    Returns the files made (each 0600); none when both pairs were there.  Refused when
    the directory or a key file is not the user's own.
    """
    if directory is None and not os.environ.get(KEYS_ENV):
        runtime.private_dir(runtime.runtime_dir(), create=True)
    directory = directory or keys_dir()
    runtime.private_dir(directory, create=True)
    made: list[str] = []
    for name in (SERVER, CLIENT):
        files = _files(directory, name)
        if all(runtime.read_private(path) is not None for path in files):
            continue
        old = os.umask(0o177)
        try:
            zmq.auth.create_certificates(directory, name)
        finally:
            os.umask(old)
        for path in files:
            os.chmod(path, 0o600)
        made.extend(files)
    return made


def _load(path: str) -> tuple[bytes, bytes | None]:
    """(public, secret or None) from a key file of ours; FileNotFoundError when it is not there."""
    if runtime.read_private(path) is None:
        raise FileNotFoundError(path)
    try:
        return zmq.auth.load_certificate(path)
    except (OSError, ValueError) as e:
        raise runtime.Refused(f"{path} is not a CURVE key file ({e}): remake it with `epc-playground keys`") from None


def server_keys(directory: str | None = None) -> ServerKeys:
    """The engine's keys, made first where missing."""
    make_keys(directory)
    directory = directory or keys_dir()
    public, secret = _load(_files(directory, SERVER)[1])
    assert secret is not None
    return ServerKeys(public, secret, directory)


def serve(ctx: zmq.Context[Any], sockets: Iterable[zmq.Socket[Any]], keys: ServerKeys) -> ThreadAuthenticator:
    """Make ``sockets`` CURVE servers that let in only the clients in ``keys.directory``; call before bind.

    The authenticator is a thread on ``ctx``: stop() it before ctx.term().
    """
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve(domain="*", location=keys.directory)
    for sock in sockets:
        sock.curve_secretkey = keys.secret
        sock.curve_publickey = keys.public
        sock.curve_server = True
    return auth


def connect(sock: zmq.Socket[Any], endpoint: str) -> None:
    """Connect a client socket (DEALER or SUB): over tcp with our CURVE keys, Refused when we have none.

    Keys the engine does not know get the handshake refused (the socket monitor's
    EVENT_HANDSHAKE_FAILED_AUTH); the socket then gets no service.
    """
    if endpoint.startswith("tcp://"):
        directory = keys_dir()
        try:
            server_public, _ = _load(_files(directory, SERVER)[0])
            public, secret = _load(_files(directory, CLIENT)[1])
        except FileNotFoundError:
            raise runtime.Refused(
                f"no CURVE keys for {endpoint} in {directory}: run `epc-playground keys` on the engine's host and "
                f"copy server.key, client.key and client.key_secret from its keys/ here (or set ${KEYS_ENV})"
            ) from None
        assert secret is not None
        sock.curve_serverkey = server_public
        sock.curve_publickey = public
        sock.curve_secretkey = secret
    sock.connect(endpoint)
