"""`quorumkv`: run a replica, a local cluster, or talk to one.

Every `serve` flag can also come from the environment variable named in its help, which is
how the StatefulSet configures replicas. A default that is a string (from the environment or
not) is converted by argparse like a value on the command line, so a malformed variable is
refused as clearly as a malformed flag.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from quorumkv import __version__
from quorumkv.settings import (
    DEFAULT_LISTEN,
    MAX_VALUE_BYTES,
    ServeSettings,
    SettingsError,
    parse_http_url,
    parse_listen,
    parse_node_id,
    parse_peers,
    positive_number,
    read_token,
)

DEFAULT_ENDPOINT = "http://127.0.0.1:7000"

EXIT_USAGE = 2  # as argparse does; the client's own exit codes are in client_cli
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name) or default


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quorumkv",
        description="QuorumKV: a replicated key-value store with linearizable reads, writes "
                    "and compare-and-set through any replica.",
        epilog="Quick start: `quorumkv local --replicas 3`, then in another terminal "
               "`quorumkv put greeting hello` and `quorumkv get greeting`.")
    parser.add_argument("--version", action="version", version=f"quorumkv {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run one replica",
                           description="Run one replica; flags default to QUORUMKV_* variables.")
    serve.add_argument("--node-id", default=_env("QUORUMKV_NODE_ID"),
                       help="this replica's id, unique in the cluster [QUORUMKV_NODE_ID]")
    serve.add_argument("--listen", default=_env("QUORUMKV_LISTEN", DEFAULT_LISTEN),
                       help=f"HOST:PORT for clients and peers (default {DEFAULT_LISTEN}) "
                            "[QUORUMKV_LISTEN]")
    serve.add_argument("--peer", action="append", metavar="ID=URL",
                       help="a member of the cluster, this one included; repeat for each "
                            "[QUORUMKV_PEERS, comma-separated]")
    serve.add_argument("--advertise-url", default=_env("QUORUMKV_ADVERTISE_URL"),
                       help="URL peers use to reach this replica; needed only when it is not "
                            "in the peer list (a replica added by scaling, which waits to be "
                            "added as a member) [QUORUMKV_ADVERTISE_URL]")
    serve.add_argument("--data-dir", default=_env("QUORUMKV_DATA_DIR"),
                       help="directory of the replica's durable state [QUORUMKV_DATA_DIR]")
    serve.add_argument("--auth-token-file", default=_env("QUORUMKV_AUTH_TOKEN_FILE"),
                       help="file holding the shared secret peers must present "
                            "[QUORUMKV_AUTH_TOKEN_FILE]")
    serve.add_argument("--request-timeout", type=float,
                       default=_env("QUORUMKV_REQUEST_TIMEOUT", "2.5"),
                       help="seconds a request may wait for a quorum before 503 (default 2.5) "
                            "[QUORUMKV_REQUEST_TIMEOUT]")
    serve.add_argument("--tombstone-ttl", type=float,
                       default=_env("QUORUMKV_TOMBSTONE_TTL", "60"),
                       help="seconds a deleted key's tombstone is kept before every replica "
                            "forgets it (default 60) [QUORUMKV_TOMBSTONE_TTL]")
    serve.add_argument("--antientropy-interval", type=float,
                       default=_env("QUORUMKV_ANTIENTROPY_INTERVAL", "10"),
                       help="seconds between anti-entropy rounds, each with a random peer, "
                            "after the start-up round with every peer (default 10) "
                            "[QUORUMKV_ANTIENTROPY_INTERVAL]")
    serve.add_argument("--max-value-bytes", type=int,
                       default=_env("QUORUMKV_MAX_VALUE_BYTES", str(MAX_VALUE_BYTES)),
                       help=f"largest value accepted (default {MAX_VALUE_BYTES}) "
                            "[QUORUMKV_MAX_VALUE_BYTES]")
    serve.add_argument("--log-level", default=_env("QUORUMKV_LOG_LEVEL", "INFO"),
                       choices=LOG_LEVELS, type=str.upper,
                       help="least severe log level written (default INFO) "
                            "[QUORUMKV_LOG_LEVEL]")

    local = sub.add_parser("local", help="run N replicas on 127.0.0.1 (no Kubernetes)",
                           description="Start N replicas on 127.0.0.1, ports P..P+N-1, print "
                                       "their URLs, and stop them all on Ctrl-C / SIGTERM.")
    local.add_argument("--replicas", type=int, default=3, help="how many (default 3)")
    local.add_argument("--base-port", type=int, default=7000, help="first port (default 7000)")
    local.add_argument("--data-dir", help="parent of the replicas' data directories "
                                          "(default: ./quorumkv-data)")

    for name, help_text in (("put", "write a value"), ("get", "read a value to stdout"),
                            ("delete", "delete a key")):
        cmd = sub.add_parser(name, help=help_text, description=help_text.capitalize() + ".")
        cmd.add_argument("key")
        if name == "put":
            cmd.add_argument("value", help="the value; `-` reads it from stdin")
            cmd.add_argument("--create-only", action="store_true",
                             help="fail (412) if the key exists (If-None-Match: *)")
        if name in ("put", "delete"):
            cmd.add_argument("--if-match", metavar="ETAG",
                             help="compare-and-set: only if the current version is ETAG")
        if name == "get":
            condition = cmd.add_mutually_exclusive_group()
            condition.add_argument("--if-match", metavar="ETAG",
                                   help="only if the current version is ETAG (exit 1 if not)")
            condition.add_argument("--if-none-match", metavar="ETAG",
                                   help="only if it changed since version ETAG: while it is "
                                        "still at it, print nothing and exit 1 (HTTP 304)")
        cmd.add_argument("--endpoint", default=_env("QUORUMKV_ENDPOINT", DEFAULT_ENDPOINT),
                         help=f"any replica's URL (default {DEFAULT_ENDPOINT}) "
                              "[QUORUMKV_ENDPOINT]")
        cmd.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
    return parser


def serve_settings(args: argparse.Namespace) -> ServeSettings:
    if not args.node_id:
        raise SettingsError("--node-id (or QUORUMKV_NODE_ID) is required")
    if not args.data_dir:
        raise SettingsError("--data-dir (or QUORUMKV_DATA_DIR) is required")
    if args.log_level not in LOG_LEVELS:  # argparse checks choices on the command line only
        raise SettingsError(f"--log-level (or QUORUMKV_LOG_LEVEL) must be one of "
                            f"{', '.join(LOG_LEVELS)}, got {args.log_level!r}")
    parse_node_id(args.node_id)
    host, port = parse_listen(args.listen)
    peers = parse_peers(args.peer or [os.environ.get("QUORUMKV_PEERS", "")])
    if not peers:
        peers = {args.node_id: f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}"}
    advertise = args.advertise_url or peers.get(args.node_id)
    if advertise is None:
        raise SettingsError(f"--node-id {args.node_id!r} is not among the peers "
                            f"({', '.join(peers)}): list every member, this one included, or "
                            "give --advertise-url for a replica that joins later")
    advertise = parse_peers([f"{args.node_id}={advertise}"])[args.node_id]
    for flag in ("request_timeout", "max_value_bytes", "tombstone_ttl", "antientropy_interval"):
        positive_number(getattr(args, flag), "--" + flag.replace("_", "-"))
    return ServeSettings(
        node_id=args.node_id, listen_host=host, listen_port=port, peers=peers,
        data_dir=Path(args.data_dir), advertise_url=advertise,
        auth_token=read_token(args.auth_token_file),
        request_timeout=args.request_timeout,
        peer_timeout=min(1.5, args.request_timeout * 0.6),
        max_value_bytes=args.max_value_bytes,
        tombstone_ttl=args.tombstone_ttl,
        antientropy_interval=args.antientropy_interval,
        volatile=os.environ.get("QUORUMKV_UNSAFE_VOLATILE") == "1",
        log_level=args.log_level)


def _key(key: str) -> str:
    """A key from the command line: keys are UTF-8 text (SPEC.md); bytes that are not reach
    Python as surrogates."""
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise SettingsError(f"the key {key!r} is not valid UTF-8") from None
    return key


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            from quorumkv.server import run_server
            return run_server(serve_settings(args))
        if args.command == "local":
            from quorumkv.local import run_local
            return run_local(args.replicas, args.base_port, args.data_dir)
        args.endpoint = parse_http_url(args.endpoint, "--endpoint")
        positive_number(args.timeout, "--timeout")
        args.key = _key(args.key)
        if args.command == "put" and args.value != "-":
            # the argument's own bytes: the shell passed them, whatever their encoding
            args.value = os.fsencode(args.value)
    except SettingsError as exc:
        parser.exit(EXIT_USAGE, f"quorumkv {args.command}: error: {exc}\n")
    from quorumkv.client_cli import run_client_command
    return asyncio.run(run_client_command(args))


if __name__ == "__main__":
    sys.exit(main())
