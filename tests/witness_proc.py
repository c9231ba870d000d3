"""`badge-bridge witness serve` as a real process on a free port, for the witness's and the publisher's tests."""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

from tests.bridge_proc import CLI
from tests.waiting import wait_until


class WitnessProcess:
    """A witness in ``directory`` (made by `witness init`), trusting the bridge key files given."""

    def __init__(self, directory: Path, *bridge_keys: Path) -> None:
        self.dir = directory
        self.bridge_keys = bridge_keys
        self.log = directory.parent / f"{directory.name}.log"
        made = subprocess.run([*CLI, "witness", "init", "--dir", str(directory)], capture_output=True, text=True,
                              timeout=60, check=True)
        self.public_key = made.stdout.strip()
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._offset = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start (again on the same port once it has one) and wait until it listens."""
        self._offset = self.log.stat().st_size if self.log.exists() else 0
        args = [*CLI, "witness", "serve", "--dir", str(self.dir), "--listen", f"127.0.0.1:{self.port}"]
        for key in self.bridge_keys:
            args += ["--bridge-key", str(key)]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=out)
        found = wait_until(lambda: self._listening(), 30, "the witness to listen", detail=self.output)
        self.port = int(found.group(1))

    def _listening(self) -> re.Match[str] | None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"witness exited with {self.proc.returncode}:\n{self.output()}")
        return re.search(r"listening on http://127\.0\.0\.1:(\d+)", self.output())

    def output(self) -> str:
        return self.log.read_text(errors="replace")[self._offset:]

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
