"""A real HTTP/1.1 server on loopback that serves feeds and misbehaves on purpose.

Used by the tests and by bench/. asyncio, keep-alive, any number of 127.x addresses on one
port (real feeds come from many hosts: notes §3, "benchmark like the wild").
Routes map a path to a Reply, or to a function of the Request returning one.
"""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    host: str  # the local address the client connected to


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    etag: str | None = None  # served, and a matching If-None-Match gets a 304
    last_modified: float | None = None  # epoch seconds; If-Modified-Since honoured
    delay: float = 0.0  # before the status line
    drip: float | None = None  # seconds between single body bytes
    hang: bool = False  # never answer
    close: bool = False  # drop the connection without answering


Handler = Reply | Callable[[Request], Reply]
REASONS = {
    200: "OK",
    301: "Moved Permanently",
    302: "Found",
    304: "Not Modified",
    307: "Temporary Redirect",
    308: "Permanent Redirect",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class FeedServer:
    """`with FeedServer() as srv: srv.route('/a.xml', Reply(body=...)); srv.url('/a.xml')`"""

    def __init__(self, hosts: tuple[str, ...] = ("127.0.0.1",), port: int = 0, latency: float = 0.0) -> None:
        self.hosts = hosts
        self.port = port
        self.latency = latency
        self.routes: dict[str, Handler] = {}
        self.log: list[Request] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._ready = threading.Event()
        self.in_flight: dict[str, int] = {}
        self.max_in_flight: dict[str, int] = {}  # per local address: the politeness check

    # -- routes ----------------------------------------------------------------------------------

    def route(self, path: str, handler: Handler) -> str:
        self.routes[path] = handler
        return self.url(path)

    def url(self, path: str, host: str | None = None) -> str:
        return f"http://{host or self.hosts[0]}:{self.port}{path}"

    def requests_for(self, path: str) -> list[Request]:
        return [r for r in self.log if r.path == path]

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> FeedServer:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("feed server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        if self.port == 0 and len(self.hosts) > 1:
            self.port = _free_port(self.hosts[0])  # one port shared by every address
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, host=list(self.hosts), port=self.port, backlog=1024)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._server.close()
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            self._loop.run_until_complete(asyncio.sleep(0))
            self._loop.close()

    # -- protocol --------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        local = writer.get_extra_info("sockname")[0]
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _version = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                req = Request(method, target, headers, local)
                self.log.append(req)
                self.in_flight[local] = self.in_flight.get(local, 0) + 1
                self.max_in_flight[local] = max(self.max_in_flight.get(local, 0), self.in_flight[local])
                try:
                    keep = await self._answer(req, writer)
                finally:
                    self.in_flight[local] -= 1
                if not keep:
                    return
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _answer(self, req: Request, writer: asyncio.StreamWriter) -> bool:
        handler = self.routes.get(req.path) or self.routes.get(req.path.split("?")[0])
        reply = handler(req) if callable(handler) else (handler or Reply(404, b"not found"))
        if self.latency:
            await asyncio.sleep(self.latency)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.hang:
            await asyncio.sleep(3600)
            return False
        if reply.close:
            return False
        status, body = reply.status, reply.body
        headers = dict(reply.headers)
        if reply.etag:
            headers["ETag"] = reply.etag
        if reply.last_modified is not None:
            headers["Last-Modified"] = email.utils.formatdate(reply.last_modified, usegmt=True)
        if status == 200 and _not_modified(req, reply):
            status, body = 304, b""
        if headers.pop("X-No-Length", None):
            headers["Connection"] = "close"  # the body ends when the connection does
        else:
            headers.setdefault("Content-Length", str(len(body)))
        head = f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        writer.write(head.encode("latin-1"))
        if req.method == "HEAD":
            body = b""
        if reply.drip is not None:
            for i in range(len(body)):
                writer.write(body[i : i + 1])
                await writer.drain()
                await asyncio.sleep(reply.drip)
        else:
            writer.write(body)
        await writer.drain()
        return headers.get("Connection", "").lower() != "close"


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _not_modified(req: Request, reply: Reply) -> bool:
    inm = req.headers.get("if-none-match")
    if reply.etag and inm:
        return inm == reply.etag
    ims = req.headers.get("if-modified-since")
    if reply.last_modified is not None and ims:
        try:
            return email.utils.parsedate_to_datetime(ims).timestamp() >= int(reply.last_modified)
        except (TypeError, ValueError):
            return False
    return False


# -- feed bodies -----------------------------------------------------------------------------------


def rss(
    items: list[dict[str, str]], *, title: str = "Test feed", encoding: str = "utf-8", language: str = "en"
) -> bytes:
    """An RSS 2.0 document; item dicts take title, link, guid, description, pubDate."""
    from xml.sax.saxutils import escape

    parts = [
        f'<?xml version="1.0" encoding="{encoding}"?>\n<rss version="2.0"><channel>'
        f"<title>{escape(title)}</title><link>http://example.org/</link>"
        f"<description>test</description><language>{language}</language>"
    ]
    for it in items:
        parts.append("<item>" + "".join(f"<{k}>{escape(v)}</{k}>" for k, v in it.items()) + "</item>")
    parts.append("</channel></rss>\n")
    return "".join(parts).encode(encoding)


def atom(
    entries: list[dict[str, str]], *, title: str = "Test Atom", encoding: str = "utf-8", language: str = "en"
) -> bytes:
    from xml.sax.saxutils import escape

    parts = [
        f'<?xml version="1.0" encoding="{encoding}"?>\n'
        f'<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="{language}">'
        f"<title>{escape(title)}</title><id>urn:test:{escape(title)}</id>"
        "<updated>2025-09-01T00:00:00Z</updated>"
    ]
    for e in entries:
        parts.append(
            f"<entry><title>{escape(e['title'])}</title><id>{escape(e['id'])}</id>"
            f'<link href="{escape(e["link"])}"/><updated>{e.get("updated", "2025-09-01T08:00:00Z")}</updated>'
            f'<summary type="html">{escape(e.get("summary", ""))}</summary></entry>'
        )
    parts.append("</feed>\n")
    return "".join(parts).encode(encoding)


def make_items(feed: int, n: int, *, words: int = 60) -> list[dict[str, str]]:
    """n plausible news items for synthetic feed number `feed` (about 1 KB of HTML each)."""
    filler = (
        "Leaders of the member states discussed regional security, trade corridors and energy "
        "projects, while officials said further talks would follow later in the year. "
    )
    out = []
    for i in range(n):
        day = 1 + (i % 28)
        out.append(
            {
                "title": f"Feed {feed} story {i}: talks on regional cooperation continue",
                "link": f"https://news{feed}.example.org/{2025}/{day:02d}/story-{feed}-{i}.html?utm_source=rss",
                "guid": f"urn:feed{feed}:item{i}",
                "description": f"<p>{(filler * (1 + words // 20))[: words * 7]}</p>",
                "pubDate": email.utils.formatdate(
                    time.mktime((2025, 8, day, 10, i % 60, 0, 0, 0, 0)), usegmt=True
                ),
            }
        )
    return out


def gzip_bomb(decoded_size: int = 200 * 2**20) -> bytes:
    """gzip of `decoded_size` zero bytes (200 MiB -> about 200 KB on the wire)."""
    return gzip.compress(b"\0" * decoded_size, compresslevel=9)


def etag_of(body: bytes) -> str:
    return '"' + hashlib.sha1(body).hexdigest()[:16] + '"'  # noqa: S324 - not security
