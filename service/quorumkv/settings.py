"""The settings of one replica, parsed once from flags and the environment."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_LISTEN = "0.0.0.0:8080"
MAX_VALUE_BYTES = 1024 * 1024


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
        url = parse_http_url(url, f"peer {node}")
        if node in peers and peers[node] != url:
            raise SettingsError(f"peer {node} is given twice with different URLs")
        peers[node] = url
    return peers


def parse_http_url(url: str, what: str) -> str:
    """`url` without its trailing slash, if it is an http(s) URL with a host: `what` names
    the flag or peer in the error, which a typo would otherwise surface much later as a
    connection failure."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SettingsError(f"{what}: {url!r} is not an http(s) URL "
                            "(e.g. http://127.0.0.1:7000)")
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
