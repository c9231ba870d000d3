"""The bridge as a real process: logs to a file (a pipe nobody drains would stall it), started, killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from tests.waiting import wait_until

CLI = [sys.executable, "-m", "badge_bridge.cli"]


def cli_env(site_file: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "BADGE_BRIDGE_DATABASE_URL"}
    env["BADGE_BRIDGE_CONFIG"] = str(site_file)
    return env


class BridgeProcess:
    def __init__(self, site_file: Path, log: Path, args: Sequence[str] = ("run",),
                 wrap: Sequence[str] = ()) -> None:
        """``args``: the CLI's arguments; ``wrap``: a command that runs it (``ip netns exec NS``)."""
        self.site_file = site_file
        self.log = log
        self.argv = [*wrap, *CLI, *args]
        self.proc: subprocess.Popen[bytes] | None = None
        self._offset = 0

    def start(self, ready: str = "started for site", timeout: float = 60) -> None:
        self._offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, env=cli_env(self.site_file), stdout=out, stderr=out)
        self.wait_for(ready, timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[self._offset:]

    def wait_for(self, text: str, timeout: float = 30) -> None:
        def logged() -> bool:
            if text in self.output():
                return True
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"bridge exited with {self.proc.returncode}:\n{self.output()[-3000:]}")
            return False

        wait_until(logged, timeout, f"the bridge to log {text!r}", detail=lambda: self.output()[-3000:])

    def signal(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Send ``sig`` and wait for the exit; a bridge that hangs fails the test with its log."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the bridge did not exit within {timeout} s of signal {sig}:\n"
                                 f"{self.output()[-8000:]}") from None

    def kill(self) -> None:
        self.signal(signal.SIGKILL, timeout=10)

    def close(self) -> None:
        """Kill the process if it still runs: a test that failed half-way leaves no bridge behind."""
        if self.proc is not None and self.proc.poll() is None:
            self.kill()
