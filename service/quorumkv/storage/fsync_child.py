"""The fsync child process (`storage/fsyncer.py` starts it): a loop over its standard input.

`s` asks for an `fdatasync` of the file at the path, answered on standard output with the
errno it failed with (0: it did not); `o` reopens the path (a new file was renamed there).
Run as a script, with the standard library only, so it costs a few MB. It ignores SIGINT and
SIGTERM (a Ctrl-C in `quorumkv local` reaches the whole process group, and the replica still
commits while it shuts down) and exits when its standard input closes, which happens when the
replica exits, however it exits.
"""

import os
import signal
import struct
import sys

SYNC = b"s"
REOPEN = b"o"
ANSWER = struct.Struct("<i")  # 0, or the errno of a failed fdatasync


def main(path: str) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    fd = os.open(path, os.O_WRONLY)
    while commands := os.read(0, 64):
        for command in commands:
            if command == REOPEN[0]:
                os.close(fd)
                fd = os.open(path, os.O_WRONLY)
            elif command == SYNC[0]:
                try:
                    os.fdatasync(fd)
                    error = 0
                except OSError as exc:
                    error = exc.errno or -1
                os.write(1, ANSWER.pack(error))


if __name__ == "__main__":
    main(sys.argv[1])
