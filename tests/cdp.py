"""A headless Chromium driven over the Chrome DevTools Protocol, for the dashboard's browser test.

No chromedriver and no browser download: the system's Chromium (Debian's `chromium`; `make test` installs it, see the
Makefile's `chromium` target) started with `--headless=new --remote-debugging-port=0`, and one websocket to its page
(the `websockets` package, a dev dependency). $CHROMIUM names another Chromium or Chrome binary.

    with Chromium(tmp_path / "chromium") as browser:
        browser.navigate("http://127.0.0.1:8080/")
        browser.evaluate("document.title")
        browser.screenshot(tmp_path / "page.png")
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

INSTALL = "sudo apt-get install -y chromium"  # what make test runs when root; the one line a user needs otherwise


def chromium_binary() -> str | None:
    """$CHROMIUM, else `chromium` (Debian) or `chromium-browser` on PATH; None when there is none."""
    name = os.environ.get("CHROMIUM")
    if name:
        return shutil.which(name)
    return shutil.which("chromium") or shutil.which("chromium-browser")


class CDPError(RuntimeError):
    pass


class Chromium:
    """One headless Chromium with one page. Started in its own process group, which close() kills (by its id)."""

    def __init__(self, profile: Path, width: int = 1400, height: int = 1000, timeout: float = 20) -> None:
        binary = chromium_binary()
        if binary is None:
            raise FileNotFoundError(f"no Chromium found (set $CHROMIUM, or install it: {INSTALL})")
        profile.mkdir(parents=True, exist_ok=True)
        self.profile = profile
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._ws: ClientConnection | None = None
        self._stack = contextlib.ExitStack()  # the websocket (a context manager)
        self.log = open(profile / "chromium.log", "wb")  # noqa: SIM115 - closed in close()
        # --no-sandbox: root (the CI container) cannot use Chromium's sandbox; the pages are our own dashboard
        self.proc = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--mute-audio",
             f"--user-data-dir={profile}", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._ws = self._stack.enter_context(connect(self._page_websocket(), max_size=None, open_timeout=timeout))
            self.call("Page.enable")
            self.call("Runtime.enable")
        except BaseException:
            self.close()
            raise

    def _page_websocket(self) -> str:
        """The page target's websocket URL, once Chromium has written its DevToolsActivePort file."""
        active = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while True:
            if self.proc.poll() is not None:
                raise CDPError(f"chromium exited with {self.proc.returncode}: {self._log_tail()}")
            try:
                port = int(active.read_text().split()[0])
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                    pages = [t for t in json.loads(r.read()) if t.get("type") == "page"]
                if pages:
                    return str(pages[0]["webSocketDebuggerUrl"])
            except (OSError, ValueError, IndexError):
                pass
            if time.monotonic() > deadline:
                raise CDPError(f"no DevTools page within {self.timeout} s: {self._log_tail()}")
            time.sleep(0.1)

    def _log_tail(self) -> str:
        try:
            return (self.profile / "chromium.log").read_bytes()[-2000:].decode(errors="replace")
        except OSError:
            return ""

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command and wait for its answer (events that come first are dropped)."""
        assert self._ws is not None
        msg_id = next(self._ids)
        self._ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CDPError(f"{method}: no answer within {self.timeout} s")
            msg = json.loads(self._ws.recv(timeout=left))
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise CDPError(f"{method}: {msg['error']}")
                return dict(msg.get("result") or {})

    def navigate(self, url: str) -> None:
        result = self.call("Page.navigate", url=url)
        if result.get("errorText"):
            raise CDPError(f"cannot load {url}: {result['errorText']}")
        self.wait_for("document.readyState === 'complete'")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited if it is a promise; JSON-serialisable)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise CDPError(f"{expression[:80]!r}: {details.get('exception', {}).get('description') or details}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float | None = None, interval: float = 0.2) -> Any:
        """Evaluate until the value is truthy; returns it."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise CDPError(f"still falsy after {timeout} s: {expression}")
            time.sleep(interval)

    def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page (not only the window), written to `path`."""
        size = self.call("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        data = self.call("Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self._stack.close()
        except OSError:
            pass
        self._ws = None
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)  # its own group: the renderer, GPU and zygote children too
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
            except ProcessLookupError:
                pass
        # children that outlived the browser process (the group outlives its leader)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.log.close()

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
