"""The fsync child process (`storage/fsyncer.py` starts it): a loop over its standard input.

Commands are `COMMAND` records: `s` asks for an `fdatasync` of the file at the path; `z`
writes zeros over a range of it (and `fdatasync`s them), to preallocate the log; `o` reopens
the path (a new file was renamed there). `s` and `z` are answered on standard output with
the errno they failed with (0: they did not).

Run as a script, with the standard library only, so it costs a few MB. It ignores SIGINT and
SIGTERM (a Ctrl-C in `quorumkv local` reaches the whole process group, and the replica still
commits while it shuts down) and exits when its standard input closes, which happens when the
replica exits, however it exits.

It runs under `SCHED_BATCH`: woken by a command, it waits for its turn on a busy CPU instead of
preempting the replica that just wrote the command, so the replica finishes what it was doing
(often staging more states for the next commit) before the child starts the `fdatasync`.
Measured with 3 replicas on 2 cores, PUT load: +5% writes/s, 5% less CPU per write
(bench/README.md, "Seventh pass").
"""

import contextlib
import os
import signal
import struct
import sys

COMMAND = struct.Struct("<cQQ")  # what, offset, length (the last two for ZERO only)
SYNC = b"s"
ZERO = b"z"
REOPEN = b"o"
ANSWER = struct.Struct("<i")  # 0, or the errno of a failed command
ZEROS = bytes(1 << 20)


def run(fd: int, what: bytes, offset: int, length: int) -> None:
    if what == ZERO:
        end = offset + length
        while offset < end:
            offset += os.pwrite(fd, ZEROS[:end - offset], offset)
    os.fdatasync(fd)


def main(path: str) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    # not Linux, or a sandbox that forbids it: the default policy works too
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    fd = os.open(path, os.O_WRONLY)
    pending = b""
    while data := os.read(0, 64 * COMMAND.size):
        pending += data
        whole = len(pending) - len(pending) % COMMAND.size
        for what, offset, length in COMMAND.iter_unpack(pending[:whole]):
            if what == REOPEN:
                os.close(fd)
                fd = os.open(path, os.O_WRONLY)
                continue
            try:
                run(fd, what, offset, length)
                error = 0
            except OSError as exc:
                error = exc.errno or -1
            try:
                os.write(1, ANSWER.pack(error))
            except BrokenPipeError:  # the replica is gone (kill -9): nobody to answer
                return
        pending = pending[whole:]


if __name__ == "__main__":
    main(sys.argv[1])
