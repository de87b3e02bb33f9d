"""A small Jepsen of our own: record a concurrent history against real replicas under faults,
then check it for linearizability with a checker we wrote (Wing-Gong-Lowe, as Porcupine does).

Layers, from pure to I/O (each module imports only those above it):

- `history`  — the operation records (pure data).
- `model`    — the sequential specification of one key: a register that may be absent.
- `checker`  — per-key linearizability search and the minimal failing window (pure).
- `etags`    — versions must name values one-to-one (pure; what the model cannot see).
- `report`   — human-readable text for results and run summaries (pure).
- `procs`    — start / kill -9 / pause / restart `quorumkv serve` (or any) processes.
- `netfault` — network partitions between loopback addresses with iptables.
- `nemesis`  — the fault schedules, driving `procs` and `netfault`.
- `workload` — concurrent HTTP clients that issue operations and record the history.
- `scaling`  — membership changes (3→5→3→1→3) through the admin API, with kill -9 and
  SIGSTOP faults that always leave a majority of the old and the new member set up.
- `runner`   — one run: cluster up, workload + nemesis, heal, final reads, check.
"""
