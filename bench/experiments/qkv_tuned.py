#!/usr/bin/env python3
"""Run `quorumkv` with experimental tuning knobs, for A/B runs with `bench/run.py --variant`.

NOT part of the product: it monkeypatches internals of a given revision to measure what a
change would buy before anybody writes it properly. Knobs (environment variables):

  QKV_SRC=DIR                 import quorumkv from DIR (e.g. an exported revision's service/)
  QKV_GC_THRESHOLD=a,b,c      gc.set_threshold(a, b, c); e.g. 20000,50,1000000 makes the
                              full (gen 2) collections that pause 100-470 ms very rare
  QKV_GC_FREEZE_AFTER=S       gc.freeze() S seconds after start (state loaded by then)
  QKV_GC_LOG=1                log GC counts, total and max pause every 5 s (stderr)
  QKV_INFLIGHT=N              concurrent batches per peer link (PeerLink max_inflight)
  QKV_FORWARD_INFLIGHT=N      the same, for forwarding links only (node.forward_links)
  QKV_WAIT_ALL=1              a plain PUT's accept waits for every voter, not a quorum
  QKV_UNSAFE_ENTRY_PUTS=1     UNSAFE, timing only: the replica that takes a plain PUT proposes
                              it itself in one round trip (no forward, no prepare), at a
                              ballot above its own acceptor's, and acceptors ignore promises
                              on accept. With QKV_WAIT_ALL=1: the message pattern of the fast
                              overwrites of docs/fast-overwrites.md, without their safety
  QKV_INLINE_FSYNC=1          fdatasync the log on the event loop itself (blocking it for the
                              disk), not in the fsync child: no pipe write, no wake-ups
  QKV_LOOP_PROBE=1            log every 5 s how late the event loop runs a timer due every
                              2 ms (mean, p50, p99, max): how long a ready callback waits
                              (uvloop's clock moves in 1 ms steps)
  QKV_HOMES=N                 revisions before 12ffe60 (a home per key): only the N voters
                              whose ids sort first are homes (keys spread over them by
                              rendezvous hashing); N=1: one home for every key, as 12ffe60 made
                              it (bench/README.md, thirteenth pass)

Example: A/B of a revision against itself with the GC knob, interleaved on the same machine:
  python3 bench/run.py --systems quorumkv --qkv-rev HEAD --workloads put,get \
    --variant "gc=rev:HEAD+bench/experiments/qkv_tuned.py@QKV_GC_THRESHOLD=20000,50,1000000"
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
from typing import Any

if os.environ.get("QKV_SRC"):
    sys.path.insert(0, os.environ["QKV_SRC"])


def _gc_knobs() -> None:
    if os.environ.get("QKV_GC_THRESHOLD"):
        a, b, c = (int(x) for x in os.environ["QKV_GC_THRESHOLD"].split(","))
        gc.set_threshold(a, b, c)
    if os.environ.get("QKV_GC_FREEZE_AFTER"):
        delay = float(os.environ["QKV_GC_FREEZE_AFTER"])
        threading.Timer(delay, gc.freeze).start()
    if os.environ.get("QKV_GC_LOG"):
        stats = {g: [0, 0.0, 0.0] for g in range(3)}
        started = [0.0]

        def callback(phase: str, info: dict[str, Any]) -> None:
            if phase == "start":
                started[0] = time.perf_counter()
                return
            pause = time.perf_counter() - started[0]
            s = stats[info["generation"]]
            s[0] += 1
            s[1] += pause
            s[2] = max(s[2], pause)

        gc.callbacks.append(callback)

        def report() -> None:
            while True:
                time.sleep(5)
                sys.stderr.write("GCSTATS " + " ".join(
                    f"gen{g}: n={s[0]} total={s[1] * 1e3:.0f}ms max={s[2] * 1e3:.1f}ms"
                    for g, s in stats.items()) + "\n")
                sys.stderr.flush()

        threading.Thread(target=report, daemon=True).start()


def _inflight_knob() -> None:
    if not (os.environ.get("QKV_INFLIGHT") or os.environ.get("QKV_FORWARD_INFLIGHT")):
        return
    from quorumkv.replication import transport

    n = int(os.environ.get("QKV_INFLIGHT") or 1)
    forwarding = int(os.environ.get("QKV_FORWARD_INFLIGHT") or n)
    original = transport.PeerLink.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        # node._link_for: only forwarding links have neither an observer nor an on_down
        is_forwarding = kwargs.get("observe") is None and kwargs.get("on_down") is None
        kwargs["max_inflight"] = forwarding if is_forwarding else n
        original(self, *args, **kwargs)

    transport.PeerLink.__init__ = init  # type: ignore[method-assign]


def _is_plain_put(change: Any) -> bool:
    from quorumkv.core.changes import Put

    return isinstance(change, Put) and change.if_match is None and not change.create_only


def _wait_all_knob() -> None:
    if os.environ.get("QKV_WAIT_ALL") != "1":
        return
    from quorumkv.core import proposer

    original = proposer.on_reply

    def on_reply(prop: Any, sender: str, request: Any, reply: Any) -> tuple[Any, Any]:
        prop, action = original(prop, sender, request, reply)
        if isinstance(action, proposer.Done) and prop.phase is proposer.Phase.ACCEPT \
                and _is_plain_put(prop.change) and prop.ok != prop.config.voters:
            return prop, proposer.Continue()
        return prop, action

    proposer.on_reply = on_reply


def _unsafe_entry_puts_knob() -> None:
    if os.environ.get("QKV_UNSAFE_ENTRY_PUTS") != "1":
        return
    from quorumkv.core import acceptor, proposer
    from quorumkv.replication.coordinator import Coordinator

    original_accept, original_change, original_begin = (
        acceptor.accept, Coordinator.change, Coordinator._begin)

    def accept(state: Any, ballot: Any, register: Any, next_promise: Any) -> Any:
        return original_accept(state._replace(promised=min(state.promised, ballot)), ballot,
                               register, next_promise)

    async def change(self: Any, key: str, change: Any, deadline: Any = None, *,
                     local_only: bool = False) -> Any:
        return await original_change(self, key, change, deadline,
                                     local_only=local_only or _is_plain_put(change))

    def begin(self: Any, key: str, change: Any) -> Any:
        if not _is_plain_put(change):
            return original_begin(self, key, change)
        self._promised.pop(key, None)
        ballot = self._local.seen(key).next(self._node, self._boot)
        return proposer.begin_accept(key, change, self._membership.config, self._node,
                                     self._boot, ballot, self._local.state(key).register)

    acceptor.accept = accept
    Coordinator.change = change  # type: ignore[method-assign]
    Coordinator._begin = begin  # type: ignore[method-assign]


def _homes_knob() -> None:
    if not os.environ.get("QKV_HOMES"):
        return
    from quorumkv import placement
    from quorumkv.replication import coordinator

    n = int(os.environ["QKV_HOMES"])

    def order(key: str, voters: Any) -> list[str]:
        ids = sorted(voters)
        return placement.rendezvous_order(key, ids[:n]) + ids[n:]

    coordinator.rendezvous_order = order
    coordinator.home_of = lambda key, voters: order(key, voters)[0]


def _loop_probe_knob() -> None:
    if os.environ.get("QKV_LOOP_PROBE") != "1":
        return
    import asyncio

    from quorumkv.node import Node

    original = Node.start
    period = 0.002

    async def start(self: Any) -> None:
        await original(self)
        loop = asyncio.get_running_loop()
        late: list[float] = []
        reported = [loop.time()]

        def tick(due: float) -> None:
            now = loop.time()
            late.append(now - due)
            if now - reported[0] >= 5 and late:
                late.sort()
                n = len(late)
                sys.stderr.write(
                    f"LOOPLATE n={n} mean={sum(late) / n * 1e3:.2f}ms "
                    f"p50={late[n // 2] * 1e3:.2f}ms p99={late[int(n * 0.99)] * 1e3:.2f}ms "
                    f"max={late[-1] * 1e3:.2f}ms\n")
                sys.stderr.flush()
                late.clear()
                reported[0] = now
            loop.call_at(now + period, tick, now + period)

        loop.call_at(loop.time() + period, tick, loop.time() + period)

    Node.start = start  # type: ignore[method-assign]


def _inline_fsync_knob() -> None:
    if os.environ.get("QKV_INLINE_FSYNC") != "1":
        return
    from quorumkv.storage.log import LogStorage

    async def sync(self: Any) -> None:
        os.fdatasync(self._fd)

    LogStorage.sync = sync  # type: ignore[method-assign]


def main() -> int:
    _inline_fsync_knob()
    _gc_knobs()
    _inflight_knob()
    _wait_all_knob()
    _unsafe_entry_puts_knob()
    _homes_knob()
    _loop_probe_knob()
    from quorumkv.cli import main as quorumkv_main

    sys.argv[0] = "quorumkv"
    return int(quorumkv_main() or 0)


if __name__ == "__main__":
    sys.exit(main())
