"""A headless Chromium driven over the DevTools protocol, with the network cut.

Only what the site test needs: open pages one after the other in one tab, and for each record the
console errors (`Runtime.consoleAPICalled` errors, `Runtime.exceptionThrown`, `Log.entryAdded`
errors), every request that left 127.0.0.1, whether the page loaded, and how many plotly charts it
has and how many were drawn (an `svg` inside the `.plotly-graph-div`). The websocket client is
tornado's (installed with Jupyter); no browser is downloaded: Debian's `chromium` is used.

The network is cut twice over: every host except 127.0.0.1 resolves to nothing
(`--host-resolver-rules`) and every proxied request goes to a closed port (`--proxy-server`).
"""

from __future__ import annotations

import asyncio
import functools
import http.server
import json
import shutil
import socketserver
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")

CHART_PROBE = """
(() => {
  const divs = Array.from(document.querySelectorAll('.plotly-graph-div, .js-plotly-plot'))
    .filter(d => !d.parentElement.closest('.plotly-graph-div, .js-plotly-plot'));
  return JSON.stringify({
    total: divs.length,
    rendered: divs.filter(d => d.querySelector('svg.main-svg, svg')).length,
    title: document.title,
    ready: document.readyState,
  });
})()
"""


def find_chromium() -> str | None:
    for candidate in CHROMIUM_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    return shutil.which("chromium")


@dataclass
class PageReport:
    url: str
    loaded: bool = False
    title: str = ""
    charts: int = 0
    charts_rendered: int = 0
    errors: list[str] = field(default_factory=list)
    external_requests: list[str] = field(default_factory=list)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base class
        pass


class SiteServer:
    """`python -m http.server` for a folder, on 127.0.0.1 and a free port, in a thread."""

    def __init__(self, root: Path) -> None:
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.httpd = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> SiteServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"


class Chromium:
    """A headless Chromium process and a DevTools websocket to its first tab."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.profile = Path(tempfile.mkdtemp(prefix="site-test-chromium-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.ws: Any = None
        self._id = 0
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._events: list[dict[str, Any]] = []
        self._reader: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 30) -> None:
        from tornado.httpclient import AsyncHTTPClient
        from tornado.websocket import websocket_connect

        self.proc = subprocess.Popen(
            [
                self.binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--proxy-server=127.0.0.1:9",
                "--proxy-bypass-list=127.0.0.1",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                f"--user-data-dir={self.profile}",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self.binary} did not start its DevTools endpoint (exit {self.proc.poll()})"
                )
            await asyncio.sleep(0.1)
        port = int(port_file.read_text().splitlines()[0])
        client = AsyncHTTPClient()
        targets = json.loads((await client.fetch(f"http://127.0.0.1:{port}/json/list")).body)
        page = next(t for t in targets if t.get("type") == "page")
        self.ws = await websocket_connect(page["webSocketDebuggerUrl"], max_message_size=256 * 1024 * 1024)
        self._reader = asyncio.ensure_future(self._read())
        for domain in ("Page", "Runtime", "Log", "Network"):
            await self.send(f"{domain}.enable")

    async def _read(self) -> None:
        while True:
            message = await self.ws.read_message()
            if message is None:
                return
            data = json.loads(message)
            if "id" in data and data["id"] in self._pending:
                future = self._pending.pop(data["id"])
                if not future.done():
                    future.set_result(data)
            else:
                self._events.append(data)

    async def send(
        self, method: str, params: dict[str, Any] | None = None, timeout: float = 30
    ) -> dict[str, Any]:
        self._id += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[self._id] = future
        await self.ws.write_message(json.dumps({"id": self._id, "method": method, "params": params or {}}))
        reply = await asyncio.wait_for(future, timeout)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        return result.get("result", {}).get("value")

    async def visit(self, url: str, *, chart_timeout: float = 20) -> PageReport:
        """Open `url`, wait for load and for its charts, and report what happened."""
        report = PageReport(url)
        self._events.clear()
        await self.send("Page.navigate", {"url": url})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(
            e.get("method") == "Page.loadEventFired" for e in self._events
        ):
            await asyncio.sleep(0.05)
        report.loaded = any(e.get("method") == "Page.loadEventFired" for e in self._events)
        deadline = time.monotonic() + chart_timeout
        while True:
            probe = json.loads(await self.evaluate(CHART_PROBE) or "{}")
            report.title = probe.get("title", "")
            report.charts, report.charts_rendered = probe.get("total", 0), probe.get("rendered", 0)
            if report.charts_rendered >= report.charts or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.3)  # late console messages (async scripts) of this page
        self._collect(report)
        return report

    def _collect(self, report: PageReport) -> None:
        for event in self._events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                args = params.get("args", [])
                report.errors.append(
                    "console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in args)
                )
            elif method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                text = details.get("exception", {}).get("description") or details.get("text", "")
                report.errors.append(f"exception: {text}")
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                entry = params["entry"]
                report.errors.append(
                    f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}"
                )
            elif method == "Network.requestWillBeSent":
                url = params.get("request", {}).get("url", "")
                if not url.startswith(("http://127.0.0.1", "data:", "blob:", "about:")):
                    report.external_requests.append(url)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self.ws is not None:
            self.ws.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


async def _visit_all(binary: str, urls: list[str]) -> dict[str, PageReport]:
    browser = Chromium(binary)
    try:
        await browser.start()
        return {url: await browser.visit(url) for url in urls}
    finally:
        await browser.close()


def visit_pages(binary: str, root: Path, pages: list[str]) -> dict[str, PageReport]:
    """Serve `root` on 127.0.0.1 and open every page (paths relative to root) in headless Chromium."""
    with SiteServer(root) as server:
        reports = asyncio.run(_visit_all(binary, [server.url(p) for p in pages]))
    return {page: reports[server.url(page)] for page in pages}
