"""Headless Chromium driven over the DevTools protocol on a pipe: open a page, run script, screenshot.

Chromium started with ``--remote-debugging-pipe`` reads protocol messages (JSON, each ended by a
NUL byte) on file descriptor 3 and answers on 4, so no port, no network and no extra package is
needed. Used by the site's browser test and by ``robust-mix leaderboard --screenshot``.

>>> with Chromium() as browser:
...     page = browser.open(Path("site/index.html").resolve().as_uri(), width=1280)
...     rows = page.evaluate("document.querySelectorAll('#board tbody tr').length")
...     page.screenshot("site.png")
"""
from __future__ import annotations

import base64
import fcntl
import json
import logging
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional, Union

from robust_mix.io import atomic_write_bytes

logger = logging.getLogger(__name__)

#: Where to look for a Chromium binary, in order (``ROBUST_MIX_CHROMIUM`` first when set).
CANDIDATES = ("chromium", "chromium-browser", "chromium-headless-shell", "google-chrome", "chrome")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check",
         "--hide-scrollbars", "--mute-audio", "--remote-debugging-pipe")


class BrowserError(RuntimeError):
    """Chromium is missing, did not start, or a protocol command failed."""


#: A Chromium or Chrome binary to use instead of the first of :data:`CANDIDATES` found.
ENV_VAR = "ROBUST_MIX_CHROMIUM"


def find_chromium() -> Optional[str]:
    """The Chromium binary to use (``$ROBUST_MIX_CHROMIUM``, empty is unset), or ``None`` when none is installed.

    Raises:
        BrowserError: ``$ROBUST_MIX_CHROMIUM`` names no program that can be run (a missing path, a folder, a file
            that is not executable), naming it; it was reported as "Chromium is not installed ... or set
            ROBUST_MIX_CHROMIUM", although it was set.
    """
    configured = os.environ.get(ENV_VAR, "").strip()
    if configured:
        found = shutil.which(configured)
        if found is None:
            raise BrowserError(f"environment variable {ENV_VAR}={os.environ[ENV_VAR]!r} names no program that can be "
                               "run (no such file on the path, a folder, or not executable); set it to a Chromium or "
                               "Chrome binary, or unset it to use the installed chromium")
        return found
    return next((path for path in map(shutil.which, CANDIDATES) if path), None)


class Page:
    """One browser tab, attached with its own protocol session."""

    def __init__(self, browser: "Chromium", session: str) -> None:
        self.browser, self.session = browser, session

    def send(self, method: str, params: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        return self.browser.send(method, params, session=self.session)

    def set_viewport(self, width: int, height: int) -> None:
        """Emulate a ``width`` x ``height`` CSS-pixel window (device scale 1)."""
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    def goto(self, url: str) -> None:
        """Navigate and wait for the page's load event."""
        self.browser.events.clear()
        reply = self.send("Page.navigate", {"url": url})
        if reply.get("errorText"):
            raise BrowserError(f"could not open {url}: {reply['errorText']}")
        self.browser.wait_for(lambda m: m.get("method") == "Page.loadEventFired"
                              and m.get("sessionId") == self.session)

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression evaluated in the page."""
        reply = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                               "awaitPromise": True})
        if "exceptionDetails" in reply:
            details = reply["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"script failed: {text}")
        return reply["result"].get("value")

    def click(self, selector: str) -> None:
        """Click the centre of the first element matching ``selector`` with real mouse events."""
        box = self.evaluate(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return null;"
                            " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
                            " return [r.left + r.width / 2, r.top + r.height / 2]; })()")
        if box is None:
            raise BrowserError(f"no element matches {selector!r}")
        x, y = box
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left",
                                                   "clickCount": 1 if kind != "mouseMoved" else 0})

    def screenshot(self, path: Union[str, Path], full_page: bool = True) -> Path:
        """Save a PNG of the viewport (or of the whole page, ``full_page``)."""
        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": full_page}
        if full_page:
            size = self.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
            params["clip"] = {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1}
        data = base64.b64decode(self.send("Page.captureScreenshot", params)["data"])
        atomic_write_bytes(path, data)
        return Path(path)


class Chromium:
    """A headless Chromium process with a fresh profile, closed on exit of the ``with`` block."""

    def __init__(self, executable: Optional[str] = None, timeout: float = 30.0) -> None:
        self.executable = executable or find_chromium()
        if self.executable is None:
            raise BrowserError("Chromium is not installed: run 'sudo apt-get install chromium' (Debian) or set "
                               "ROBUST_MIX_CHROMIUM to a Chromium or Chrome binary")
        self.timeout = timeout
        self.events: list[dict[str, Any]] = []
        self._buffer = b""
        self._next_id = 0
        self._profile = tempfile.mkdtemp(prefix="robust-mix-chromium-")
        to_child, self._to_browser = os.pipe()
        self._from_browser, from_child = os.pipe()

        def wire() -> None:  # in the child: the protocol pipe on descriptors 3 (in) and 4 (out)
            high_in = fcntl.fcntl(to_child, fcntl.F_DUPFD, 10)
            high_out = fcntl.fcntl(from_child, fcntl.F_DUPFD, 10)
            os.dup2(high_in, 3)
            os.dup2(high_out, 4)

        self._closed = False
        self._stderr = tempfile.TemporaryFile()
        try:
            self.process = subprocess.Popen(
                [self.executable, *FLAGS, f"--user-data-dir={self._profile}", "about:blank"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr, preexec_fn=wire,
                close_fds=False)
        except OSError as err:
            for fd in (to_child, from_child, self._to_browser, self._from_browser):
                os.close(fd)
            self._stderr.close()
            shutil.rmtree(self._profile, ignore_errors=True)
            raise BrowserError(f"could not start {self.executable}: {err}") from err
        finally:
            if not self._stderr.closed:
                os.close(to_child)
                os.close(from_child)
        try:
            self.version = self.send("Browser.getVersion")["product"]
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> "Chromium":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _stderr_tail(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")[-2000:]

    def _read(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        ready, _, _ = select.select([self._from_browser], [], [], max(remaining, 0))
        if not ready:
            raise BrowserError(f"Chromium did not answer within {self.timeout:g} s")
        chunk = os.read(self._from_browser, 1 << 20)
        if not chunk:
            raise BrowserError(f"Chromium closed the protocol pipe; its output:\n{self._stderr_tail()}")
        self._buffer += chunk

    def _messages(self, deadline: float):
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                yield json.loads(raw)
            self._read(deadline)

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The first event (already received or next) for which ``predicate`` holds."""
        for i, event in enumerate(self.events):
            if predicate(event):
                return self.events.pop(i)
        for message in self._messages(time.monotonic() + self.timeout):
            if "id" not in message and predicate(message):
                return message
            if "id" not in message:
                self.events.append(message)

    def send(self, method: str, params: Optional[dict[str, Any]] = None,
             session: Optional[str] = None) -> dict[str, Any]:
        """Send one protocol command and return its result (events that arrive meanwhile are kept)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        try:
            os.write(self._to_browser, json.dumps(message).encode("utf-8") + b"\0")
        except BrokenPipeError:
            raise BrowserError(f"Chromium exited; its output:\n{self._stderr_tail()}") from None
        for reply in self._messages(time.monotonic() + self.timeout):
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method} failed: {reply['error'].get('message')}")
                return reply.get("result", {})
            if "id" not in reply:
                self.events.append(reply)

    def open(self, url: str, width: int = 1280, height: int = 800) -> Page:
        """A new tab of ``width`` x ``height`` CSS pixels showing ``url`` (after its load event)."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        page.send("Page.enable")
        page.set_viewport(width, height)
        page.goto(url)
        return page

    def close(self) -> None:
        """Close the browser and remove its profile (once; later calls do nothing)."""
        if self._closed:
            return
        self._closed = True
        if self.process.poll() is None:
            try:
                os.write(self._to_browser, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
                self.process.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        self._stderr.close()
        shutil.rmtree(self._profile, ignore_errors=True)
