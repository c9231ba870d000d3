"""A tiny real MJPEG-over-HTTP camera (multipart/x-mixed-replace, like many IP cameras) for tests.

Run as a subprocess so a test can kill it (the stream dies) and start it again on the same port (the
camera comes back):

    python tests/mjpeg_server.py --port 0 --video PATH --fps 10 [--stall-after N]

It prints ``listening on PORT`` once it accepts connections. Every client gets its own pass over the video,
looped, at ``--fps``. ``--stall-after N`` sends N frames and then keeps the connection open without sending
anything more, which is what a hung camera looks like.
"""

from __future__ import annotations

import argparse
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2

BOUNDARY = "frameboundary"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        cap = cv2.VideoCapture(str(self.server.video), cv2.CAP_FFMPEG)
        period = 1.0 / self.server.fps
        due = time.monotonic()
        sent = 0
        try:
            while True:
                if self.server.stall_after is not None and sent >= self.server.stall_after:
                    self.server.stalled.wait()  # never set: hold the connection open, send nothing
                ok, frame = cap.read()
                if not ok:
                    cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    ok, frame = cap.read()
                    if not ok:
                        return
                jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()
                due += period
                time.sleep(max(0.0, due - time.monotonic()))
                self.wfile.write(
                    f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
                    + jpeg
                    + b"\r\n"
                )
                self.wfile.flush()
                sent += 1
        except (BrokenPipeError, ConnectionResetError):
            return
        finally:
            cap.release()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the tests read only the ``listening`` line."""


class _Server(ThreadingHTTPServer):
    allow_reuse_address = True  # restart on the same port while old connections sit in TIME_WAIT
    daemon_threads = True

    def __init__(self, port: int, video: Path, fps: float, stall_after: int | None) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.video = video
        self.fps = fps
        self.stall_after = stall_after
        self.stalled = threading.Event()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--video", type=Path, required=True)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--stall-after", type=int, default=None)
    args = parser.parse_args()
    server = _Server(args.port, args.video, args.fps, args.stall_after)
    print(f"listening on {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
