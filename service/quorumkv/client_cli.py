"""`quorumkv put|get|delete`: the command-line client, a thin layer over `quorumkv.client`.

Exit codes: 0 done, 1 not found, precondition failed or not modified, 3 no quorum (503),
4 other errors.
"""

from __future__ import annotations

import argparse
import sys

import aiohttp

from quorumkv.client import (
    Client,
    NotModified,
    PreconditionFailed,
    QuorumKVError,
    Unavailable,
)

EXIT_OK, EXIT_MISSING, EXIT_UNAVAILABLE, EXIT_ERROR = 0, 1, 3, 4


async def run_client_command(args: argparse.Namespace) -> int:
    try:
        async with Client(args.endpoint, timeout=args.timeout) as client:
            return await _run(client, args)
    except PreconditionFailed as exc:
        print(f"quorumkv {args.command}: precondition failed: {exc.detail}", file=sys.stderr)
        return EXIT_MISSING
    except Unavailable as exc:
        print(f"quorumkv {args.command}: unavailable ({exc.detail}); retry in "
              f"{exc.retry_after:g}s", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except QuorumKVError as exc:
        print(f"quorumkv {args.command}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        print(f"quorumkv {args.command}: cannot reach {args.endpoint}: "
              f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE


def entity_tag(version: str | None) -> str | None:
    """`--if-match` or `--if-none-match` as an HTTP entity tag. The version printed as
    `"5.0.1"` reaches us without its quotes when pasted into a shell, and a bare tag never
    matches."""
    if version is None or version == "*" or version.startswith(('"', 'W/"')):
        return version
    return f'"{version}"'


async def _run(client: Client, args: argparse.Namespace) -> int:
    if_match = entity_tag(getattr(args, "if_match", None))
    if args.command == "put":
        value = sys.stdin.buffer.read() if args.value == "-" else args.value
        result = await client.put(args.key, value, if_match=if_match,
                                  create_only=args.create_only)
        print(f"{'created' if result.created else 'replaced'} {args.key} "
              f"version {result.etag}", file=sys.stderr)
        return EXIT_OK
    if args.command == "get":
        if_none_match = entity_tag(args.if_none_match)
        if if_none_match is not None:
            found = await client.get_if_changed(args.key, if_none_match)
        else:
            found = await client.get(args.key, if_match=if_match)
        if found is None:
            print(f"quorumkv get: {args.key}: not found", file=sys.stderr)
            return EXIT_MISSING
        if isinstance(found, NotModified):
            print(f"quorumkv get: {args.key}: not modified, still version {found.etag}",
                  file=sys.stderr)
            return EXIT_MISSING
        print(f"{args.key} version {found.etag}", file=sys.stderr)
        sys.stdout.buffer.write(found.value)
        if sys.stdout.isatty():
            sys.stdout.write("\n")
        sys.stdout.flush()
        return EXIT_OK
    deleted = await client.delete(args.key, if_match=if_match)
    if not deleted:
        print(f"quorumkv delete: {args.key}: not found", file=sys.stderr)
        return EXIT_MISSING
    return EXIT_OK
