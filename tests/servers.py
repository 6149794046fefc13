"""Test helper: serve an ASGI app for real (uvicorn, HTTP over loopback) for the duration of a `with` block."""
from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn
from starlette.types import ASGIApp


class BackgroundServer:
    """Uvicorn in a daemon thread on a free loopback port: `with BackgroundServer(app) as url:`."""

    def __init__(self, app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0):
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind((host, port))  # binding here, not in uvicorn, so port 0 gives a known free port
        self.url = f"http://{host}:{self.socket.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_keep_alive=5))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def start(self, timeout: float = 30) -> str:
        """Start serving; returns the base URL once uvicorn (and the app's startup) is up."""
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server at {self.url} did not start within {timeout} s")
            time.sleep(0.02)
        return self.url

    def stop(self) -> None:
        """Ask uvicorn to finish (running the app's shutdown), then free the port."""
        self.server.should_exit = True
        self.thread.join(10)
        self.socket.close()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()
