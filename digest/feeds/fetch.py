"""Fetch feeds politely and concurrently: the network edge of the pipeline.

One small httpx pool per host (a per-host limit is where politeness belongs, and small pools
cost far less CPU than one big one: measured in bench/RESULTS.md), a global cap on
requests in flight, a total deadline per feed (httpx's read timeout is per chunk, so a
slow drip would never trip it), conditional GET, and our own bounded decompression
(httpx inflates a whole chunk at once, so a gzip bomb would be in memory before any cap).
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import mimetypes
import ssl
import zlib
from dataclasses import replace
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit
from urllib.request import url2pathname

import certifi
import httpx

from digest.config import HttpSettings
from digest.model.records import FetchRequest, FetchResult, FetchStatus

ACCEPT = (
    "application/rss+xml, application/atom+xml, application/feed+json, application/rdf+xml;q=0.9, "
    "application/xml;q=0.9, text/xml;q=0.8, application/json;q=0.8, */*;q=0.5"
)
FEED_TYPES = ("application/rss+xml", "application/atom+xml", "application/feed+json", "application/json")
MAX_RETRY_AFTER = 7 * 86400.0


class BodyTooLarge(Exception):
    pass


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, min((when - now).total_seconds(), MAX_RETRY_AFTER))


def decode_body(raw: bytes, content_encoding: str | None, limit: int) -> bytes:
    """Undo Content-Encoding without ever holding more than `limit` decoded bytes."""
    codings = [c.strip().lower() for c in (content_encoding or "").split(",") if c.strip()]
    data = raw
    for coding in reversed(codings):
        if coding in ("identity", ""):
            continue
        if coding in ("gzip", "x-gzip"):
            d = zlib.decompressobj(wbits=47)  # 32 + 15: gzip or zlib header, detected
        elif coding == "deflate":
            # "deflate" is zlib-wrapped by the RFC, raw by many servers: try both
            d = zlib.decompressobj(wbits=15) if data[:1] == b"\x78" else zlib.decompressobj(wbits=-15)
        else:
            raise ValueError(f"unsupported Content-Encoding {coding!r}")
        out = d.decompress(data, limit + 1)
        if len(out) > limit or d.unconsumed_tail:
            raise BodyTooLarge(
                f"body inflates to more than {limit} bytes (http.max_decoded); "
                "a compression bomb, or raise the cap if the feed is genuine"
            )
        data = out
    if len(data) > limit:
        raise BodyTooLarge(f"body is larger than {limit} bytes (http.max_decoded)")
    return data


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """One TLS context per process for every per-host client: building one costs ~15 ms
    (certifi's bundle), so it is built once, and by a fetch worker before its shard arrives."""
    return ssl.create_default_context(cafile=certifi.where())


def prepare() -> None:
    """Do the one-off work of a first fetch ahead of time (a worker does it while it waits):
    httpx imports httpcore only when its first client is built."""
    import httpcore  # noqa: F401

    shared_ssl_context()


class Fetcher:
    """Use as `async with Fetcher(settings) as f: await f.fetch(request)`; one per event loop."""

    def __init__(self, settings: HttpSettings, *, clock: type[datetime] = datetime) -> None:
        self.settings = settings
        self._clients: dict[tuple[str, str, int | None], httpx.AsyncClient] = {}
        self._host_slots: dict[tuple[str, str, int | None], asyncio.Semaphore] = {}
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._clock = clock

    async def __aenter__(self) -> Fetcher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(c.aclose() for c in self._clients.values()), return_exceptions=True)
        self._clients.clear()

    def _client_for(self, key: tuple[str, str, int | None]) -> httpx.AsyncClient:
        client = self._clients.get(key)
        if client is None:
            s = self.settings
            client = httpx.AsyncClient(
                timeout=httpx.Timeout(
                    connect=s.connect_timeout, read=s.read_timeout, write=s.read_timeout, pool=None
                ),
                limits=httpx.Limits(
                    max_connections=s.per_host, max_keepalive_connections=s.per_host, keepalive_expiry=30.0
                ),
                follow_redirects=True,
                max_redirects=s.max_redirects,
                verify=shared_ssl_context(),
                headers={
                    "User-Agent": s.user_agent,
                    "Accept": ACCEPT,
                    # only what decode_body can bound; br/zstd would be inflated unchecked
                    "Accept-Encoding": "gzip, deflate",
                },
            )
            self._clients[key] = client
        return client

    async def fetch(self, request: FetchRequest) -> FetchResult:
        """The feed at request.url; a web page that names its feed is followed to it (discovery)."""
        result = await self._fetch(request)
        feed_url = discovered_feed(result)
        if feed_url is None:
            return result
        # Feed discovery, as rss2email and Miniflux do it: the page's first
        # <link rel="alternate" type="application/rss+xml|atom+xml|feed+json">. One hop only, and
        # the feed is recorded as where the page moved (poll.next_state keeps it as fetch_url), so
        # the next poll asks the feed itself, with its own validators.
        found = await self._fetch(FetchRequest(request.feed, feed_url))
        if found.status is not FetchStatus.OK:
            error = f"the page names its feed {feed_url}, which failed: {found.error}"
            return replace(found, url=request.url, error=error)
        moved = found.permanent_url or found.final_url or feed_url
        return replace(found, url=request.url, permanent_url=moved)

    async def _fetch(self, request: FetchRequest) -> FetchResult:
        parts = urlsplit(request.url)
        if parts.scheme == "file":
            result = await asyncio.to_thread(self._read_file, request)
        else:
            key = (parts.scheme, (parts.hostname or "").lower(), parts.port)
            host_slot = self._host_slots.setdefault(key, asyncio.Semaphore(self.settings.per_host))
            async with host_slot, self._slots:
                try:
                    async with asyncio.timeout(self.settings.deadline):
                        result = await self._get(self._client_for(key), request)
                except TimeoutError:
                    result = self._failed(
                        request,
                        f"no complete response within {self.settings.deadline:g}s "
                        "(http.deadline); the server is too slow or hangs",
                    )
        return result

    def _failed(self, request: FetchRequest, error: str, **kw: Any) -> FetchResult:
        return FetchResult(feed=request.feed, url=request.url, status=FetchStatus.FAILED, error=error, **kw)

    def _read_file(self, request: FetchRequest) -> FetchResult:
        path = Path(url2pathname(urlsplit(request.url).path))
        try:
            size = path.stat().st_size
            if size > self.settings.max_decoded:
                return self._failed(request, f"file {path} is {size} bytes, over http.max_decoded")
            body = path.read_bytes()
        except FileNotFoundError:
            return self._failed(request, f"file {path} does not exist; fix the feed's url")
        except OSError as exc:
            return self._failed(request, f"cannot read {path}: {exc.strerror}")
        ctype = mimetypes.guess_type(path.name)[0] or "application/xml"
        if ctype == "text/xml":
            ctype = "application/xml"  # text/xml without charset means us-ascii (RFC 3023)
        return FetchResult(
            feed=request.feed,
            url=request.url,
            status=FetchStatus.OK,
            body=body,
            final_url=request.url,
            content_type=ctype,
        )

    async def _get(self, client: httpx.AsyncClient, request: FetchRequest) -> FetchResult:
        s = self.settings
        headers = {}
        if request.etag:
            headers["If-None-Match"] = request.etag
        if request.last_modified:
            headers["If-Modified-Since"] = request.last_modified
        try:
            async with client.stream("GET", request.url, headers=headers) as resp:
                return await self._read_response(request, resp, s)
        except httpx.TooManyRedirects:
            return self._failed(
                request, f"more than {s.max_redirects} redirects (a redirect loop?); use the feed's final URL"
            )
        except httpx.ConnectTimeout:
            return self._failed(
                request, f"no connection within {s.connect_timeout:g}s (http.connect_timeout)"
            )
        except httpx.ReadTimeout:
            return self._failed(request, f"silent for {s.read_timeout:g}s (http.read_timeout)")
        except httpx.ConnectError as exc:
            return self._failed(
                request, f"cannot connect ({_reason(exc)}); check the host name and that the site is up"
            )
        except httpx.UnsupportedProtocol:
            return self._failed(request, "the URL scheme is not http, https or file")
        except httpx.HTTPError as exc:
            return self._failed(request, f"HTTP error: {_reason(exc)}")

    async def _read_response(
        self, request: FetchRequest, resp: httpx.Response, s: HttpSettings
    ) -> FetchResult:
        hops = [h.status_code for h in resp.history]
        permanent = str(resp.url) if hops and all(c in (301, 308) for c in hops) else None
        common: dict[str, Any] = {
            "http_status": resp.status_code,
            "final_url": str(resp.url),
            "permanent_url": permanent,
        }
        if resp.status_code == 304:
            return FetchResult(feed=request.feed, url=request.url, status=FetchStatus.NOT_MODIFIED, **common)
        if resp.status_code >= 400 or resp.status_code < 200 or 300 <= resp.status_code < 400:
            retry_after = None
            if resp.status_code in (429, 503):
                retry_after = parse_retry_after(resp.headers.get("retry-after"), self._clock.now(UTC))
            hint = f"; retrying after {retry_after:g}s as asked" if retry_after is not None else ""
            return self._failed(
                request,
                f"HTTP {resp.status_code} {resp.reason_phrase}{hint}",
                retry_after=retry_after,
                **common,
            )
        length = resp.headers.get("content-length")
        if length and length.isdigit() and int(length) > s.max_body:
            return self._failed(
                request,
                f"body of {length} bytes is over http.max_body ({s.max_body}); "
                "raise it if the feed is genuine",
                **common,
            )
        raw = bytearray()
        async for chunk in resp.aiter_raw():
            raw += chunk
            if len(raw) > s.max_body:
                return self._failed(
                    request,
                    f"body is over http.max_body ({s.max_body} bytes); raise it if the feed is genuine",
                    **common,
                )
        try:
            body = decode_body(bytes(raw), resp.headers.get("content-encoding"), s.max_decoded)
        except (BodyTooLarge, ValueError, zlib.error) as exc:
            return self._failed(request, str(exc), **common)
        return FetchResult(
            feed=request.feed,
            url=request.url,
            status=FetchStatus.OK,
            body=body,
            content_type=resp.headers.get("content-type"),
            content_language=resp.headers.get("content-language"),
            etag=resp.headers.get("etag"),
            last_modified=resp.headers.get("last-modified"),
            **common,
        )


class _AlternateLinks(HTMLParser):
    """<link rel="alternate" type="(a feed type)" href="..."> of a page, in document order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "link":
            return
        a = {k.lower(): (v or "").strip() for k, v in attrs}
        rel = a.get("rel", "").lower().split()
        kind = a.get("type", "").lower().split(";")[0].strip()
        if "alternate" in rel and kind in FEED_TYPES and a.get("href"):
            self.found.append(a["href"])


def discover(page: bytes, base: str) -> str | None:
    """The first feed a page links to as its alternate, absolute; only http(s) (a page must never
    point the fetcher at a file: URL)."""
    head = page[:512_000].decode("utf-8", "replace")  # the <head> is at the top; charset barely matters
    parser = _AlternateLinks()
    try:
        parser.feed(head)
        parser.close()
    except (AssertionError, ValueError):  # HTMLParser on badly broken markup
        pass
    for href in parser.found:
        url = urljoin(base, href)
        if urlsplit(url).scheme in ("http", "https") and url != base:
            return url
    return None


def discovered_feed(result: FetchResult) -> str | None:
    """Where an HTML page (served over http(s)) says its feed is, if it is one."""
    if result.status is not FetchStatus.OK or not result.body or not result.final_url:
        return None
    if urlsplit(result.final_url).scheme not in ("http", "https"):
        return None
    ctype = (result.content_type or "").split(";")[0].strip().lower()
    head = result.body[:512].lstrip().lower()
    if ctype not in ("text/html", "application/xhtml+xml") and not head.startswith(
        (b"<!doctype html", b"<html")
    ):
        return None
    return discover(result.body, result.final_url)
