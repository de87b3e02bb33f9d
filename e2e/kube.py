"""Small helpers for the e2e suite: kubectl/helm as subprocesses, and waiting on facts.

The suite drives the cluster the way a user does (kubectl, helm), so that what it proves is
what a user sees. Every wait polls a fact with a deadline and, on timeout, says what it saw
last; nothing sleeps blindly.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "quorumkv"
CACHE = Path(os.environ.get("QUORUMKV_CACHE") or
             Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "quorumkv")
T = TypeVar("T")


def find_tool(name: str) -> str | None:
    """PATH first, then the builds cached by e2e/tools and e2e/localcluster."""
    found = shutil.which(name)
    if found:
        return found
    for cand in [str(CACHE / "bin" / name), *sorted(glob.glob(str(CACHE / "k8s/*/bin" / name)))]:
        if os.access(cand, os.X_OK):
            return cand
    return None


class CommandError(AssertionError):
    def __init__(self, args: list[str], proc: subprocess.CompletedProcess[str]) -> None:
        super().__init__(f"{' '.join(args)} exited {proc.returncode}:\n"
                         f"{proc.stderr.strip()}\n{proc.stdout.strip()}"[:4000])
        self.proc = proc
        self.stderr = proc.stderr


def run(args: list[str], *, input: str | None = None, check: bool = True,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, input=input, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise CommandError(args, proc)
    return proc


class Kubectl:
    def __init__(self, binary: str, namespace: str | None = None) -> None:
        self.binary = binary
        self.namespace = namespace

    def in_namespace(self, namespace: str) -> Kubectl:
        return Kubectl(self.binary, namespace)

    def __call__(self, *args: str, input: str | None = None, check: bool = True,
                 timeout: float = 120) -> subprocess.CompletedProcess[str]:
        ns = ["-n", self.namespace] if self.namespace else []
        return run([self.binary, *ns, *args], input=input, check=check, timeout=timeout)

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "-o", "json").stdout)

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        proc = self("get", kind, name, "-o", "json", "--ignore-not-found", check=True)
        return json.loads(proc.stdout) if proc.stdout.strip() else None

    def apply(self, manifest: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return self("apply", "-f", "-", *extra, input=manifest)


def wait_for(fact: Callable[[], T | None], *, timeout: float, what: str,
             interval: float = 0.5, seen: Callable[[], object] | None = None) -> T:
    """Poll `fact` until it returns a truthy value (returned). On timeout fail with `what`
    and the last thing `seen()` reported (or the last exception)."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = fact()
            if value:
                return value
            last_error = None
        except (CommandError, KeyError, IndexError, TypeError, ValueError) as e:
            last_error = e
        if time.monotonic() >= deadline:
            detail = ""
            if seen is not None:
                try:
                    detail = f"\nlast seen: {seen()}"
                except Exception as e:  # the report must not hide the timeout
                    detail = f"\n(could not report state: {e})"
            if last_error is not None:
                detail += f"\nlast error: {last_error}"
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


def condition(obj: dict[str, Any] | None, ctype: str) -> dict[str, Any]:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return dict(c)
    return {}


def summary(obj: dict[str, Any] | None) -> str:
    """One line of a KVCluster's status, for failure messages."""
    if not obj:
        return "<absent>"
    st = obj.get("status") or {}
    conds = ", ".join(f"{c['type']}={c['status']}({c.get('reason')})"
                      for c in st.get("conditions") or [])
    return (f"phase={st.get('phase')} replicas={st.get('replicas')} "
            f"ready={st.get('readyReplicas')} [{conds}]")
