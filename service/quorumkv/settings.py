"""The settings of one replica, parsed once from flags and the environment."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_LISTEN = "0.0.0.0:8080"
MAX_VALUE_BYTES = 1024 * 1024
# A node id names the replica in ETags (`"5.0.<id>"`), in `ID=URL` lists (QUORUMKV_PEERS is
# comma-separated) and in logs: letters, digits, `-`, `_` and `.`, as in a DNS label.
NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


class SettingsError(ValueError):
    """A flag or environment variable has a value we cannot use; the message says which."""


@dataclasses.dataclass(frozen=True)
class ServeSettings:
    node_id: str
    """This replica's id, unique in the cluster (the StatefulSet uses the pod ordinal)."""
    listen_host: str
    listen_port: int
    """Where the client API and the peer protocol are served."""
    peers: dict[str, str]
    """Every member including this one: node id -> base URL."""
    data_dir: Path
    """Durable state (an append-only log); restarting on it keeps everything acknowledged."""
    advertise_url: str = ""
    """How peers reach this replica; defaults to its entry in `peers`."""
    auth_token: str | None = None
    """Shared secret required as `Authorization: Bearer` on `/internal/` requests."""
    request_timeout: float = 2.5
    """How long a client request may wait for a quorum before it is answered 503."""
    peer_timeout: float = 1.5
    """How long one batch to a peer may take before that peer is marked down."""
    max_value_bytes: int = MAX_VALUE_BYTES
    antientropy_interval: float = 10.0
    """Seconds between anti-entropy rounds with a random peer (after the start-up round)."""
    tombstone_ttl: float = 60.0
    """Seconds a deleted key's tombstone is kept before every voter forgets it."""
    volatile: bool = False
    """UNSAFE, tests only: keep the Paxos state in memory (amnesia on restart)."""
    log_level: str = "INFO"


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SettingsError(f"--listen must be HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def parse_node_id(value: str, what: str = "--node-id") -> str:
    if not NODE_ID.fullmatch(value):
        raise SettingsError(f"{what}: {value!r} is not a node id (1-63 letters, digits, "
                            "'-', '_' or '.', starting with a letter or digit)")
    return value


def positive_number(value: float, what: str) -> float:
    """`value` if it is a finite number above zero (argparse's `float` takes nan and inf)."""
    if not (math.isfinite(value) and value > 0):
        raise SettingsError(f"{what} must be a positive number, got {value!r}")
    return value


def parse_peers(values: list[str]) -> dict[str, str]:
    """`ID=URL` items (also comma-separated) into an ordered mapping, strictly."""
    peers: dict[str, str] = {}
    for item in (part.strip() for value in values for part in value.split(",")):
        if not item:
            continue
        node, sep, url = item.partition("=")
        node, url = node.strip(), url.strip()
        if not sep or not node or not url:
            raise SettingsError(f"a peer must be ID=URL, got {item!r}")
        node = parse_node_id(node, "a peer's id")
        url = parse_http_url(url, f"peer {node}")
        if node in peers and peers[node] != url:
            raise SettingsError(f"peer {node} is given twice with different URLs")
        peers[node] = url
    return peers


def parse_http_url(url: str, what: str) -> str:
    """`url` without its trailing slash, if it is an http(s) URL with a host: `what` names
    the flag or peer in the error, which a typo would otherwise surface much later as a
    connection failure."""
    example = "(e.g. http://127.0.0.1:7000)"
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a port out of range or not a number
    except ValueError as exc:
        raise SettingsError(f"{what}: {url!r} is not a valid URL ({exc}) {example}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"{what}: {url!r} is not an http(s) URL {example}")
    if port == 0:
        raise SettingsError(f"{what}: {url!r} has port 0 {example}")
    if "?" in url or "#" in url:  # also an empty query or fragment
        raise SettingsError(f"{what}: {url!r} has a query or fragment; give the base URL "
                            f"{example}")
    return url.rstrip("/")


def read_token(path: str | None) -> str | None:
    if not path:
        return None
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise SettingsError(f"cannot read the auth token file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SettingsError(f"the auth token file {path} is not UTF-8 text") from None
    if not token:
        raise SettingsError(f"the auth token file {path} is empty")
    return token
