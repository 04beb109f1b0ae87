"""A real ``fiduciary serve`` subprocess on a free loopback port (never a mock), and the CLI."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.pgserver import _free_port

BIN = Path(sys.executable).parent


def until(probe: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if probe():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("the server did not start")


def fiduciary(env: dict[str, str], *args: str) -> str:
    """Runs the CLI as an operator would; a failure raises with what it printed."""
    r = subprocess.run([str(BIN / "fiduciary"), *args], capture_output=True, text=True,
                       env=env)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout


def cli(env: dict[str, str], *args: str) -> Any:
    return json.loads(fiduciary(env, *args, "--json"))


class RealServer:
    """``fiduciary serve --data-dir data`` with ``env``; its output goes to a file beside the
    data directory (a pipe nobody reads would fill and stall a chatty server)."""

    def __init__(self, data: Path, env: dict[str, str], *args: str) -> None:
        self.data, self.env, self.args = data, env, args
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.output_path = data.parent / f"serve-{self.port}.out"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RealServer:
        with self.output_path.open("wb") as out:
            self._proc = subprocess.Popen(
                [str(BIN / "fiduciary"), "serve", "--data-dir", str(self.data),
                 "--port", str(self.port), *self.args],
                env=self.env, stdout=out, stderr=subprocess.STDOUT)
        try:
            # Generous: on a loaded 2-core machine a cold start can take tens of seconds.
            until(lambda: httpx.get(f"{self.base}/healthz").status_code == 200, timeout=90)
        except AssertionError:
            raise AssertionError(f"the server did not start:\n{self.stop().decode()}") from None
        return self

    def stop(self) -> bytes:
        """Stop the server as an operator would (Ctrl-C) and return everything it printed."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGINT)
            try:
                self._proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        return self.output_path.read_bytes()
