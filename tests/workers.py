"""Service workers as real processes, started as production starts them (`<service>.pex worker`), for
tests that kill them (SIGKILL), stop them (SIGTERM) or take their database away; and bounded waits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

READY = "worker: running jobs"  # what the `worker` command says once it has started


class WorkerProcess:
    """`<service> worker` in a subprocess with `env` (added to this process's own, with its
    import path); its output is collected line by line as it comes."""

    def __init__(self, service: str, env: dict[str, str]):
        self.service = str(service)
        self.process = subprocess.Popen(
            [sys.executable, "-m", f"nectar.{self.service}.main", "worker"],
            env={**os.environ, **env, "PYTHONPATH": os.pathsep.join(sys.path)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, needle: str, timeout: float = 60) -> None:
        """Until the output says `needle`; fails if the worker exits first."""

        def said() -> bool:
            assert self.process.poll() is None, f"{self.service} worker exited:\n{self.output}"
            return needle in self.output

        wait_for(said, timeout, f"{needle!r} from the {self.service} worker", lambda: self.output[-3000:])

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed or unregistered."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        """SIGTERM (a graceful stop), then SIGKILL if it is still there after 15 s."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


@contextmanager
def workers(service: str, env: dict[str, str]) -> Iterator[Callable[[], WorkerProcess]]:
    """Yields `start()`, which starts one more worker and returns it once it runs jobs; every
    worker still running is stopped when the block ends."""
    started: list[WorkerProcess] = []

    def start() -> WorkerProcess:
        started.append(WorkerProcess(service, env))
        started[-1].wait_for(READY)
        return started[-1]

    try:
        yield start
    finally:
        for worker in started:
            worker.stop()


def wait_for(predicate: Callable[[], object], timeout: float, what: str, said: Callable[[], str] = str):
    """Polls `predicate` until it returns something true (returned), or fails after `timeout`
    seconds, saying what it waited for and `said()`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}\n{said()}")
