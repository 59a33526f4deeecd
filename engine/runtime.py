"""Discovery and runtime files: where an engine listens and how a client finds it (DESIGN.md section 3).

The default engine listens on ipc sockets in a 0700 runtime directory and writes
``engine.json`` there; a client takes ``--connect``, else $EPC_PLAYGROUND_ENDPOINT,
else that file.  Not part of the pure core: it touches the file system and processes.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from typing import Any

ENDPOINT_ENV = "EPC_PLAYGROUND_ENDPOINT"
RUNTIME_FILE = "engine.json"


def runtime_dir() -> str:
    """The 0700 directory for the default engine's sockets and runtime file."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    return os.path.join(base, "epc-playground") if base else f"/tmp/epc-playground-{os.getuid()}"


def read_runtime_file(directory: str | None = None) -> dict[str, Any] | None:
    """What the running default engine wrote about itself, or None when there is none (or it died)."""
    path = os.path.join(directory or runtime_dir(), RUNTIME_FILE)
    try:
        with open(path) as f:
            info = json.load(f)
        if not process_alive(int(info["pid"])):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info if isinstance(info, dict) else None


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (on this host)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def find_endpoint(connect: str | None = None) -> str | None:
    """The engine endpoint to use: ``--connect``, else $EPC_PLAYGROUND_ENDPOINT, else the runtime file's."""
    if connect:
        return connect
    if os.environ.get(ENDPOINT_ENV):
        return os.environ[ENDPOINT_ENV]
    info = read_runtime_file()
    return str(info["endpoint"]) if info else None


# -- the engine's side: choosing endpoints, writing and removing runtime files --


@dataclass(slots=True)
class Endpoints:
    """Where one engine listens: requests, events, and its runtime file (None unless default)."""

    endpoint: str
    pub: str
    runtime_file: str | None = None


def default_endpoints(directory: str) -> tuple[str, str]:
    return f"ipc://{directory}/engine.sock", f"ipc://{directory}/events.sock"


def pub_endpoint_for(endpoint: str, directory: str) -> str:
    """Where events go for a given request endpoint: beside an ipc socket, the next tcp port."""
    if endpoint.startswith("ipc://"):
        return endpoint + ".events"
    if endpoint.startswith("tcp://"):
        host, _, port = endpoint[len("tcp://") :].rpartition(":")
        if port.isdigit():
            return f"tcp://{host}:{int(port) + 1}"
    raise ValueError(f"bad endpoint {endpoint!r}: use ipc://PATH or tcp://HOST:PORT")


def prepare_runtime_dir(directory: str) -> None:
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)


def choose_endpoints(endpoint: str | None) -> Endpoints:
    """The endpoints of an engine given ``--bind`` (or None: the default engine, in the runtime dir).

    RuntimeError when a live default engine already owns the runtime directory.
    """
    directory = runtime_dir()
    if endpoint is not None:
        if endpoint.startswith("tcp://*") or endpoint.startswith("tcp://:"):
            endpoint = "tcp://127.0.0.1" + endpoint[endpoint.rindex(":") :]
        return Endpoints(endpoint, pub_endpoint_for(endpoint, directory))
    running = read_runtime_file(directory)
    if running is not None:
        raise RuntimeError(
            f"an engine is already running (pid {running['pid']}, {running['endpoint']}): "
            "stop it, or give this one --bind"
        )
    prepare_runtime_dir(directory)
    endpoint, pub = default_endpoints(directory)
    return Endpoints(endpoint, pub, os.path.join(directory, RUNTIME_FILE))


def write_runtime_file(endpoints: Endpoints, capacity_bytes: int) -> None:
    """Say where this engine listens, atomically (a reader never sees half a file)."""
    if endpoints.runtime_file is None:
        return
    info = {"pid": os.getpid(), "endpoint": endpoints.endpoint, "pub": endpoints.pub, "capacity": capacity_bytes}
    tmp = endpoints.runtime_file + ".tmp"
    with open(tmp, "w") as f:
        json.dump(info, f)
    os.replace(tmp, endpoints.runtime_file)


def remove_runtime_files(endpoints: Endpoints) -> None:
    """Remove this engine's runtime file (if it is still ours) and its ipc sockets."""
    if endpoints.runtime_file is not None:
        info = read_runtime_file(os.path.dirname(endpoints.runtime_file))
        if info is not None and info.get("pid") == os.getpid():
            os.unlink(endpoints.runtime_file)
    for ep in (endpoints.endpoint, endpoints.pub):
        if ep.startswith("ipc://"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(ep[len("ipc://") :])
