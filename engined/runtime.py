"""Discovery and runtime files: where an engine listens and how a client finds it (docs/protocol.md).

The default engine listens on ipc sockets in a 0700 runtime directory and writes
``engine.json`` (0600) there; a client takes ``--connect``, else $EPC_PLAYGROUND_ENDPOINT,
else that file.  Everything found there must be the user's own: a directory or file of
another uid, or a symlink, is refused (never followed), and group or other bits on our
own are taken away.  An ipc endpoint is live when a unix-socket connect to its path
succeeds; a socket that refuses is stale, whatever the pid in the runtime file is doing.

tcp (always with CURVE, engined.curve) listens beyond loopback only when asked.

Not part of the pure core: it touches the file system, processes and zmq sockets.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import os
import socket
import stat
from dataclasses import dataclass
from typing import Any

import zmq

from engined import liveness

ENDPOINT_ENV = "EPC_PLAYGROUND_ENDPOINT"
RUNTIME_FILE = "engine.json"


class Refused(RuntimeError):
    """A path or endpoint we must not use, or cannot: one line naming it and what to do."""


# -- private paths ------------------------------------------------------------------


def _own(path: str, st: os.stat_result, kind: str) -> None:
    """Refused unless ``st`` (of ``path``) is a ``kind`` of ours."""
    if stat.S_ISLNK(st.st_mode):
        raise Refused(f"{path} is a symlink, which a runtime {kind} must not be: remove it")
    if stat.S_ISDIR(st.st_mode) != (kind == "directory"):
        raise Refused(f"{path} is not a {kind}: remove it")
    if st.st_uid != os.geteuid():
        raise Refused(
            f"{path} belongs to uid {st.st_uid}, not to you (uid {os.geteuid()}): remove it, "
            "or set XDG_RUNTIME_DIR to a directory of your own"
        )


def private_dir(path: str, *, create: bool = False) -> bool:
    """Check that ``path`` is a directory of ours and make it 0700; False when it does not exist.

    With ``create``, makes it (and its parents) first.  Refused: a symlink, not a
    directory, or another uid's.
    """
    if create:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return False
    except OSError:  # ELOOP: a symlink; ENOTDIR: a file
        _own(path, os.lstat(path), "directory")
        raise
    try:
        _own(path, os.fstat(fd), "directory")
        if stat.S_IMODE(os.fstat(fd).st_mode) != 0o700:
            os.fchmod(fd, 0o700)
    finally:
        os.close(fd)
    return True


def read_private(path: str) -> str | None:
    """The text of a 0600 file of ours (made so if it is ours), None when it does not exist; Refused otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        _own(path, os.lstat(path), "file")
        raise
    with os.fdopen(fd) as f:
        st = os.fstat(fd)
        _own(path, st, "file")
        if stat.S_IMODE(st.st_mode) & 0o077:
            os.fchmod(fd, 0o600)
        return f.read()


def write_private(path: str, text: str) -> None:
    """Write a 0600 file atomically (a reader never sees half of it)."""
    tmp = f"{path}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(fd, 0o600)
        f.write(text)
    os.replace(tmp, path)


# -- discovery ------------------------------------------------------------------------


def runtime_dir() -> str:
    """The 0700 directory for the default engine's sockets, runtime file and keys."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    return os.path.join(base, "epc-playground") if base else f"/tmp/epc-playground-{os.getuid()}"


def read_runtime_file(directory: str | None = None) -> dict[str, Any] | None:
    """What the running default engine wrote about itself; None when there is none or it is stale.

    Refused when the directory or the file is not the user's own (they are never followed).
    """
    directory = directory or runtime_dir()
    if not private_dir(directory):
        return None
    path = os.path.join(directory, RUNTIME_FILE)
    text = read_private(path)
    try:
        info = json.loads(text) if text is not None else None
        if not isinstance(info, dict):
            return None
        endpoint, pid = str(info["endpoint"]), int(info["pid"])
    except (ValueError, KeyError, TypeError):
        return None
    if endpoint.startswith("ipc://"):
        return info if ipc_listening(endpoint[len("ipc://") :], mine=True) else None
    return info if liveness.process_alive(pid) else None


def ipc_listening(path: str, *, mine: bool = False) -> bool:
    """Whether something listens on the unix socket ``path`` (a connect succeeds).

    ``mine``: Refused when the socket file is another uid's (a runtime file must not lead there).
    """
    if mine:
        with contextlib.suppress(FileNotFoundError):
            st = os.lstat(path)
            if stat.S_ISSOCK(st.st_mode) and st.st_uid != os.geteuid():
                raise Refused(f"{path} belongs to uid {st.st_uid}, not to you: remove it")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError, NotADirectoryError):
            return False
        except OSError as e:
            return e.errno not in (errno.ENOTSOCK, errno.EPROTOTYPE)
    return True


def find_endpoint(connect: str | None = None) -> str | None:
    """The engine endpoint to use: ``--connect``, else $EPC_PLAYGROUND_ENDPOINT, else the runtime file's.

    Refused when the runtime directory or file is not the user's own.
    """
    if connect:
        return connect
    if os.environ.get(ENDPOINT_ENV):
        return os.environ[ENDPOINT_ENV]
    info = read_runtime_file()
    return str(info["endpoint"]) if info else None


def is_local(endpoint: str) -> bool:
    """Whether an endpoint is on this host: ipc, or tcp on a loopback address."""
    if endpoint.startswith("ipc://"):
        return True
    host = endpoint[len("tcp://") :].rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- the engine's side: endpoints, binding, runtime files ------------------------------


@dataclass(slots=True)
class Endpoints:
    """Where one engine listens: requests, events, and its runtime file (None unless default)."""

    endpoint: str
    pub: str
    runtime_file: str | None = None


def default_endpoints(directory: str) -> tuple[str, str]:
    return f"ipc://{directory}/engine.sock", f"ipc://{directory}/events.sock"


def pub_endpoint_for(endpoint: str) -> str:
    """Where events go for a given request endpoint: beside an ipc socket, the next tcp port.

    ValueError unless ipc://PATH or tcp://HOST:PORT with a port from 1 to 65534.
    """
    if endpoint.startswith("ipc://"):
        return endpoint + ".events"
    if endpoint.startswith("tcp://"):
        host, _, port = endpoint[len("tcp://") :].rpartition(":")
        if host and port.isascii() and port.isdigit() and 0 < int(port) < 65535:
            return f"tcp://{host}:{int(port) + 1}"
    raise ValueError(f"bad endpoint {endpoint!r}: use ipc://PATH or tcp://HOST:PORT (PORT 1-65534, events on PORT+1)")


def choose_endpoints(endpoint: str | None, *, allow_remote: bool = False) -> Endpoints:
    """The endpoints of an engine given ``--bind`` (None: the default engine, in the runtime directory).

    Refused: a live engine on one of them, an ipc path that is not a socket or is
    abstract, the runtime directory not the user's own, a non-loopback tcp address
    without ``allow_remote``.  A stale ipc socket is removed.
    """
    if endpoint is None:
        directory = runtime_dir()
        private_dir(directory, create=True)
        chosen = Endpoints(*default_endpoints(directory), os.path.join(directory, RUNTIME_FILE))
    else:
        if endpoint.startswith("tcp://*") or endpoint.startswith("tcp://:"):
            endpoint = "tcp://127.0.0.1" + endpoint[endpoint.rindex(":") :]
        chosen = Endpoints(endpoint, pub_endpoint_for(endpoint))
    for ep in (chosen.endpoint, chosen.pub):
        if ep.startswith("tcp://") and not allow_remote and not is_local(ep):
            raise Refused(
                f"{ep} is not a loopback address: add --allow-remote to serve other hosts "
                "(over CURVE: `epc-playground keys` says which keys they need)"
            )
        if ep.startswith("ipc://"):
            _claim_ipc(ep[len("ipc://") :])
    return chosen


def _claim_ipc(path: str) -> None:
    """Make ``path`` free for our socket: Refused when an engine listens there or it is not a socket."""
    if not path or path.startswith("@"):
        raise Refused(f"ipc://{path}: abstract sockets have no permissions, anyone could connect: give a path")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise Refused(f"{path} exists and is not a socket: remove it, or bind elsewhere")
    if ipc_listening(path):
        raise Refused(f"an engine is already running at ipc://{path}: stop it, or give this one another --bind")
    try:
        os.unlink(path)  # stale: what an engine killed with -9 leaves behind
    except OSError as e:
        raise Refused(f"cannot remove the stale socket {path}: {e.strerror}") from None


def bind(sock: zmq.Socket[Any], endpoint: str) -> None:
    """Listen on ``endpoint``; an ipc socket is 0600 whatever the umask.  Refused when it cannot (a port in use)."""
    old = os.umask(0o177)
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as e:
        raise Refused(f"cannot listen on {endpoint}: {e.strerror}") from None
    finally:
        os.umask(old)
    if endpoint.startswith("ipc://"):
        os.chmod(endpoint[len("ipc://") :], 0o600)


def write_runtime_file(endpoints: Endpoints, capacity_bytes: int) -> None:
    """Say where this engine listens (a 0600 file, written atomically); nothing unless it is the default engine."""
    if endpoints.runtime_file is None:
        return
    info = {"pid": os.getpid(), "endpoint": endpoints.endpoint, "pub": endpoints.pub, "capacity": capacity_bytes}
    write_private(endpoints.runtime_file, json.dumps(info))


def remove_runtime_files(endpoints: Endpoints) -> None:
    """Remove this engine's runtime file (if it is still ours) and its ipc sockets."""
    if endpoints.runtime_file is not None:
        with contextlib.suppress(Refused, OSError, ValueError, TypeError, AttributeError):
            if json.loads(read_private(endpoints.runtime_file) or "{}").get("pid") == os.getpid():
                os.unlink(endpoints.runtime_file)
    for ep in (endpoints.endpoint, endpoints.pub):
        if ep.startswith("ipc://"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(ep[len("ipc://") :])
