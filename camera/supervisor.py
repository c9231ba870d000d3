"""Runs one worker process per camera, so cameras use every core, and restarts a worker that dies.

A camera's trouble (a dead stream, a corrupt file) is the worker's to report and retry; a worker that
crashes outright is restarted here with a back-off, and the others never notice. A worker that exits
cleanly (a file source played to its end) is done and not restarted.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import threading
import time
from pathlib import Path

from badge_bridge.backoff import Backoff
from badge_bridge.config import SiteConfig
from camera.worker import run_worker

log = logging.getLogger(__name__)

RESTART_MAX_S = 30.0


class Supervisor:
    def __init__(self, config: SiteConfig, site_file: Path, cameras: list[str] | None = None) -> None:
        self.site_file = str(site_file)
        self.keys = cameras if cameras is not None else [cam.key for cam in config.cameras]
        unknown = set(self.keys) - {cam.key for cam in config.cameras}
        if unknown:
            raise ValueError(f"no camera {', '.join(sorted(unknown))} in the site file")
        self.ctx = mp.get_context("spawn")  # a clean interpreter per camera: no inherited threads or sockets
        self.procs: dict[str, mp.process.BaseProcess] = {}
        self.stopping = threading.Event()

    def _spawn(self, key: str) -> None:
        proc = self.ctx.Process(target=run_worker, args=(self.site_file, key), name=f"camera-{key}", daemon=False)
        proc.start()
        self.procs[key] = proc
        log.info("camera %s: worker pid %s", key, proc.pid)

    def run(self) -> None:
        """Until ``stopping`` is set: keep every camera's worker alive."""
        backoff = {key: Backoff(1.0, RESTART_MAX_S) for key in self.keys}
        restart_at: dict[str, float] = {}
        for key in self.keys:
            self._spawn(key)
        while not self.stopping.wait(0.5):
            now = time.monotonic()
            for key, proc in list(self.procs.items()):
                if proc.is_alive():
                    continue
                if proc.exitcode == 0:  # a file that ended (loop off), or a clean stop: its work is done
                    log.info("camera %s: worker finished", key)
                    del self.procs[key]
                    continue
                if key not in restart_at:
                    delay = backoff[key].next()
                    log.error("camera %s: worker exited with %s; restarting in %.0fs", key, proc.exitcode, delay)
                    restart_at[key] = now + delay
                elif now >= restart_at[key]:
                    del restart_at[key]
                    self._spawn(key)
        self.stop()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.is_alive():
                proc.terminate()
        for proc in self.procs.values():
            proc.join(10)
            if proc.is_alive():
                proc.kill()
