"""Headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`), stdlib only.

Chromium reads commands from its fd 3 and writes replies and events to its fd 4, each a JSON message
ended by a NUL byte. `Browser.open(url)` gives a page that evaluates JavaScript, clicks at an
element's centre with real mouse events and takes screenshots.

As a script, it photographs pages: `python tests/browser.py site/index.html index.png [width height]`.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHROMIUM = os.environ.get("PEFTBENCH_CHROMIUM", "/usr/bin/chromium")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-pipe")  # fmt: skip


def available() -> bool:
    return Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)


def _above_four(fd: int) -> int:
    """`fd` moved to a number above 4, so that the child's `3<&fd 4>&fd` cannot overwrite one with the other."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


class Browser:
    def __init__(self, timeout: float = 30.0):
        self.timeout, self.next_id = timeout, 0
        self.profile = tempfile.mkdtemp(prefix="peftbench-chromium-")
        to_browser_r, self.to_browser = map(_above_four, os.pipe())
        self.from_browser, from_browser_w = map(_above_four, os.pipe())
        script = f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w} {to_browser_r}<&- {from_browser_w}>&-'
        self.process = subprocess.Popen(
            ["bash", "-c", script, CHROMIUM, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            pass_fds=(to_browser_r, from_browser_w),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self.buffer, self.events = b"", []

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (OSError, TimeoutError, RuntimeError):
            pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        for fd in (self.to_browser, self.from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)

    def _read_message(self) -> dict:
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self.buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("Chromium sent nothing in time")
            chunk = os.read(self.from_browser, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed its DevTools pipe")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, session: str | None = None, **params) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read_message()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, event: str, session: str) -> dict:
        while True:
            for i, seen in enumerate(self.events):
                if seen.get("method") == event and seen.get("sessionId") == session:
                    return self.events.pop(i)
            self.events.append(self._read_message())

    def open(self, url: str, width: int = 1400, height: int = 900) -> "Page":
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        page = Page(self, session)
        self.send("Page.enable", session)
        self.send("Emulation.setDeviceMetricsOverride", session, width=width, height=height, deviceScaleFactor=1,
                  mobile=False)  # fmt: skip
        page.navigate(url)
        return page


class Page:
    def __init__(self, browser: Browser, session: str):
        self.browser, self.session = browser, session

    def navigate(self, url: str) -> None:
        self.browser.send("Page.navigate", self.session, url=url)
        self.browser.wait_for("Page.loadEventFired", self.session)

    def evaluate(self, expression: str):
        result = self.browser.send("Runtime.evaluate", self.session, expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def click(self, selector: str) -> None:
        """A left click at the centre of the first element matching `selector`, scrolled into view."""
        box = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.scrollIntoView({{block: 'center'}});"
            " const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.browser.send("Input.dispatchMouseEvent", self.session, type=kind, x=box[0], y=box[1], button="left",
                              clickCount=1)  # fmt: skip

    def screenshot(self, path: Path, full_page: bool = True) -> None:
        result = self.browser.send(
            "Page.captureScreenshot", self.session, format="png", captureBeyondViewport=full_page
        )
        Path(path).write_bytes(base64.b64decode(result["data"]))


if __name__ == "__main__":
    page_path, png = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
    size = [int(v) for v in sys.argv[3:5]] or [1400, 900]
    with Browser() as browser:
        browser.open(page_path.as_uri(), *size).screenshot(png)
    print(f"wrote {png}")
