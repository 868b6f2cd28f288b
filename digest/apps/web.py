"""`digest serve`: the subscriber's side on the web. A small Starlette app.

    /subscribe              form -> a confirmation mail with a signed, expiring link (double opt-in)
    /confirm/{token}        a page with one button; the POST activates the subscriber
    /unsubscribe/{token}    a page with one button; an RFC 8058 one-click POST unsubscribes at once
    /preferences/{token}    topics, tags, cadence, time, zone, format, pause
    /archive/{token}        the digests sent, each at a stable URL
    /feeds/{topic}.atom     a topic's newest stories as Atom (public when delivery.archive is)
    /feeds/subscriber/{token}.atom   a subscriber's own topics and tags as Atom (signed link)
    /search, /search/{token}         stories by words in their titles and summaries (ranked)

Each handler parses the request, calls one function of digest.service (or the model) and renders
a page. What every request needs is made once, in `Site`: the templates, the signing keys, the rate
limits and one Store (one engine and its connection pool), opened at start-up and closed at
shutdown through Starlette's lifespan. The Store is synchronous (SQLAlchemy), so every call that
touches it runs in a worker thread (starlette.concurrency.run_in_threadpool): a slow query holds
one thread, never the event loop and every other request with it.

A GET never changes anything (mail scanners prefetch links). Every form carries a CSRF token that
must match a cookie; the one-click POST carries none (mailbox providers send no cookies, RFC 8058
§3.2) and is identified by its signed URL alone. Pages send a strict Content-Security-Policy and
load nothing from other sites. Re-subscribing a known address mails that address and says on the
page exactly what a new address would get (no address enumeration); a per-address and per-client
limit stops mail-bombing (the client: the peer, or X-Forwarded-For from `web.trusted_proxies` only).
A sign-up writes nothing to a known address: the preferences asked for travel in the signed
confirmation link, with the row's updated_at, so the link works once (issue 12). Bodies over
64 KiB get 413.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import ipaddress
import secrets
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, ParamSpec, TypeVar
from urllib.parse import parse_qs

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from digest.config import LoadedConfig
from digest.errors import DigestError, SubscriberError
from digest.mail.notices import send_notice
from digest.mail.render import default_template_dir
from digest.mail.tokens import Signer, SignUps, load_secret
from digest.model.atom import FeedInfo, FeedStory, atom_feed, feed_updated
from digest.model.links import safe_href
from digest.model.stories import topic_title
from digest.model.subscribers import CONFIRM_MAX_AGE, WEEKDAYS, Subscriber, subscriber_from_form
from digest.service import archive, subscriptions
from digest.service.fetching import open_store, utcnow
from digest.service.lookup import feed_stories, feed_titles, search_stories
from digest.storage.store import Store

MAX_BODY = 64 * 1024  # a form is a few hundred bytes; eight 50 MiB bodies took the server to 476 MB
ARCHIVE_PAGE = 50
PER_ADDRESS_SECONDS = 600  # at most one mail to one address in ten minutes
PER_CLIENT = (10, 3600)  # at most ten subscribe attempts from one client an hour
CSP = (
    "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
# style.css and style-head.css: the archived digests' look, linked instead of inlined so that the
# CSP can keep style-src 'self' (inline styles would need 'unsafe-inline')
STATIC = {
    "web.css": "text/css",
    "style.css": "text/css",
    "style-head.css": "text/css",
    "app.js": "text/javascript",
}

P = ParamSpec("P")
T = TypeVar("T")


class RateLimit:
    def __init__(self) -> None:
        self.last_mail: dict[str, float] = {}
        self.by_client: dict[str, deque[float]] = defaultdict(deque)

    def client_allowed(self, client: str) -> bool:
        now, (limit, window) = time.monotonic(), PER_CLIENT
        q = self.by_client[client]
        while q and now - q[0] > window:
            q.popleft()
        if len(q) >= limit:
            return False
        q.append(now)
        return True

    def mail_allowed(self, address: str) -> bool:
        now = time.monotonic()
        if now - self.last_mail.get(address, -1e9) < PER_ADDRESS_SECONDS:
            return False
        self.last_mail[address] = now
        return True

    def mail_failed(self, address: str) -> None:
        """No mail went out: the address keeps its slot for the retry."""
        self.last_mail.pop(address, None)


class BodyCap:
    """Refuse request bodies over `limit` bytes with 413, declared (Content-Length) or streamed."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > self.limit:
            response = PlainTextResponse(f"request body over {self.limit} bytes\n", 413)
            return await response(scope, receive, send)
        seen, started = 0, False

        async def capped() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:  # chunked, or a Content-Length that lied
                raise _TooLarge
            return message

        async def sending(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self.app(scope, capped, sending)
        except _TooLarge:
            if started:
                raise
            response = PlainTextResponse(f"request body over {self.limit} bytes\n", 413)
            await response(scope, receive, send)


class _TooLarge(Exception):
    pass


class SecurityHeaders:
    """The CSP and its companions on every response. Plain ASGI: Starlette's BaseHTTPMiddleware
    runs each response through a second task and a memory stream, which this needs none of."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


def client_address(peer: str | None, forwarded_for: str | None, trusted: list[Any]) -> str:
    """Who is asking: the peer, unless it is a trusted proxy; then the last address in
    X-Forwarded-For that is not one (each proxy appends the address it saw; anything to the left of
    the first untrusted hop was written by the client and proves nothing)."""
    if peer is None:
        return "unknown"

    def is_trusted(address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.strip())
        except ValueError:
            return False
        return any(ip in net for net in trusted)

    if not forwarded_for or not is_trusted(peer):
        return peer
    for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
        if not is_trusted(hop):
            return hop
    return peer


class Site:
    """What every request needs, made once per app from the config; the Store is attached while
    the app runs (create_app's lifespan)."""

    def __init__(self, loaded: LoadedConfig) -> None:
        self.loaded = loaded
        self.delivery = d = loaded.config.delivery
        secret = load_secret(d.secret, loaded.base_dir)
        self.signer = Signer(secret, self._salt_of)
        self.sign_ups = SignUps(secret, CONFIRM_MAX_AGE)
        self.user_dir = loaded.base_dir / (d.templates or "templates")
        dirs = [str(p) for p in (self.user_dir, default_template_dir()) if p.is_dir()]
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(dirs), autoescape=True, undefined=jinja2.StrictUndefined
        )
        self.renderer = archive.web_renderer(loaded)  # the digest templates, for archived digests
        self.limits = RateLimit()
        self.trusted = [ipaddress.ip_network(n, strict=False) for n in loaded.config.web.trusted_proxies]
        self.base = d.base_url.rstrip("/")
        self.public = d.archive == "public"  # the topic feeds and the open search follow the archive's rule
        self.topics = [{"name": t.name, "title": topic_title(t.name)} for t in loaded.rules.topics]
        self.topic_names = [t.name for t in loaded.rules.topics]
        self.tags = [t.name for t in loaded.rules.tags]
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError(
                "digest's web app has not started (its lifespan did not run): serve it with uvicorn, "
                "or use `with TestClient(app)`"
            )
        return self._store

    def _salt_of(self, subscriber_id: int) -> str | None:
        return self.store.subscriber_salts([subscriber_id]).get(subscriber_id)

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn` (database work, or anything that may block) in a worker thread."""
        return await run_in_threadpool(fn, *args, **kwargs)

    def verify(self, token: str, purpose: str) -> Awaitable[int | None]:
        """The subscriber a signed link names (the check reads the subscription's salt)."""
        return self.run(self.signer.verify, token, purpose)

    def sign(self, subscriber_id: int, purpose: str) -> Awaitable[str]:
        return self.run(self.signer.sign, subscriber_id, purpose)


def create_app(loaded: LoadedConfig, *, store: Store | None = None) -> Starlette:
    """The web app. `store`: one the caller opened and closes (`digest serve` opens it first, so a
    database that cannot be opened is one line before the server starts); without it, one is
    opened at start-up and closed at shutdown."""
    site = Site(loaded)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        site._store = store or await run_in_threadpool(open_store, loaded)
        try:
            yield
        finally:
            if store is None:
                await run_in_threadpool(site.store.close)
            site._store = None

    app = Starlette(
        routes=ROUTES, middleware=[Middleware(BodyCap), Middleware(SecurityHeaders)], lifespan=lifespan
    )
    app.state.site = site
    return app


def site_of(request: Request) -> Site:
    site: Site = request.app.state.site
    return site


# -- pages --------------------------------------------------------------------------------------


def page(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    site = site_of(request)
    csrf = request.cookies.get("csrf") or secrets.token_urlsafe(24)
    ctx.setdefault("message", None)
    ctx.setdefault("errors", [])
    ctx.setdefault("feeds", [])
    html = site.templates.get_template(name).render(
        list_name=site.delivery.list_name,
        csrf=csrf,
        topics=site.topics,
        tags=site.tags,
        weekdays=WEEKDAYS,
        **ctx,
    )
    response = HTMLResponse(html, status_code=status)
    secure = site.base.startswith("https")
    response.set_cookie("csrf", csrf, httponly=True, samesite="strict", secure=secure)
    return response


def simple(request: Request, heading: str, text: str = "", status: int = 200, **ctx: Any) -> HTMLResponse:
    ctx = {"action": None, "button": "", "link": None, "link_text": "", **ctx}
    return page(request, "web/page.html.j2", status, heading=heading, text=text, **ctx)


def bad_link(request: Request) -> HTMLResponse:
    return simple(request, "This link is not valid", "Use the link in your latest digest.", 400)


def expired_form(request: Request) -> HTMLResponse:
    return simple(request, "Please try again", "Reload the page and press the button again.", 400)


def csrf_matches(request: Request, sent: object) -> bool:
    cookie = request.cookies.get("csrf")
    return bool(cookie) and secrets.compare_digest(str(sent or ""), cookie or "")


async def form_of(request: Request) -> tuple[dict[str, Any], bool]:
    """The form's fields (topics and tags as lists) and whether its CSRF token matches the cookie."""
    form = await request.form()
    data: dict[str, Any] = {k: form.getlist(k) if k in ("topics", "tags") else form.get(k) for k in form}
    return data, csrf_matches(request, data.pop("csrf", ""))


def form_errors(exc: SubscriberError) -> list[str]:
    return [str(e).split(": ", 1)[-1] for e in str(exc).splitlines()]


# -- subscribe and confirm ----------------------------------------------------------------------

BLANK = Subscriber("x@example.org", timezone="UTC")  # the form's defaults


async def subscribe_form(request: Request) -> Response:
    return page(request, "web/subscribe.html.j2", sub=BLANK, email="")


async def subscribe(request: Request) -> Response:
    site = site_of(request)
    data, csrf_ok = await form_of(request)
    if not csrf_ok:
        return simple(
            request, "Please try again", "The form had expired. Reload the page and send it again.", 400
        )
    peer = request.client.host if request.client else None
    if not site.limits.client_allowed(
        client_address(peer, request.headers.get("x-forwarded-for"), site.trusted)
    ):
        return simple(request, "Too many attempts", "Please wait an hour before trying again.", 429)
    address = str(data.get("email") or "")
    try:
        sub = subscriber_from_form(data, address, site.topic_names)
    except SubscriberError as exc:
        return page(request, "web/subscribe.html.j2", 422, sub=BLANK, email=address, errors=form_errors(exc))
    if site.limits.mail_allowed(sub.email):
        try:
            mail = await site.run(sign_up_mail, site, sub)
            if mail is not None:  # None: the address complained of our mail, never mailed again
                subject, text = mail
                await send_notice(
                    site.delivery,
                    site.loaded.base_dir,
                    to=sub.email,
                    subject=subject,
                    text=text,
                    tag="confirm",
                    now=utcnow(),
                )
        except DigestError as exc:
            site.limits.mail_failed(sub.email)  # nothing was sent: the retry may send it
            reason = str(exc).splitlines()[0]
            return simple(request, "We could not send the mail", f"{reason}. Please try again later.", 503)
    # the same words for new and known addresses: the page reveals nothing
    return simple(
        request, "Check your inbox", f"We have sent a message to {sub.email}. Open the link in it to confirm."
    )


def sign_up_mail(site: Site, sub: Subscriber) -> tuple[str, str] | None:
    """Record the sign-up -> the mail's subject and text, with the link it needs, or None: no
    mail (worker thread)."""
    signed = subscriptions.sign_up(site.store, sub, utcnow())
    if signed.quiet:
        return None
    if signed.known:
        link = f"{site.base}/preferences/{site.signer.sign(signed.subscriber_id, 'preferences')}"
    else:
        link = f"{site.base}/confirm/{site.sign_ups.make(signed.subscriber_id, signed.stamp, signed.asked)}"
    return subscriptions.sign_up_mail(site.delivery.list_name, sub.email, link, known=signed.known)


async def confirm(request: Request) -> Response:
    site = site_of(request)
    token = request.path_params["token"]
    signed = site.sign_ups.read(token)
    if signed is None:
        return simple(
            request,
            "This link has expired",
            "Subscribe again to get a new one.",
            400,
            link="/subscribe",
            link_text="Subscribe",
        )
    if request.method == "GET":
        return simple(
            request,
            "Confirm your subscription",
            "One click and your first digest is on its way.",
            action=f"/confirm/{token}",
            button="Confirm",
        )
    _, csrf_ok = await form_of(request)
    if not csrf_ok:
        return expired_form(request)
    sid, stamp, asked = signed
    outcome, sub = await site.run(subscriptions.confirm, site.store, sid, stamp, asked, utcnow())
    if outcome == "unknown" or sub is None:
        return simple(request, "Unknown subscription", "Subscribe again.", 404)
    if outcome == "invalid":
        return bad_link(request)
    if outcome == "used":
        # used already, or the subscription changed since (unsubscribed, say)
        return simple(
            request,
            "This link has been used",
            "It works once. To subscribe again, use the form.",
            400,
            link="/subscribe",
            link_text="Subscribe",
        )
    return simple(
        request,
        "You are subscribed",
        f"{sub.email} will receive {site.delivery.list_name}.",
        link=f"/preferences/{await site.sign(sid, 'preferences')}",
        link_text="Choose what and when",
    )


# -- unsubscribe --------------------------------------------------------------------------------


async def unsubscribe(request: Request) -> Response:
    site = site_of(request)
    token = request.path_params["token"]
    sid = await site.verify(token, "unsubscribe")
    if sid is None:
        return bad_link(request)
    if request.method == "GET":
        return simple(
            request,
            "Unsubscribe",
            "You will receive no more digests.",
            action=f"/unsubscribe/{token}",
            button="Unsubscribe",
        )
    body = (await request.body()).decode("utf-8", "replace")
    one_click = "List-Unsubscribe=One-Click" in body
    # the one-click POST (RFC 8058 §3.2) comes with no cookie: the signed URL is its authority
    if not one_click and not csrf_matches(request, parse_qs(body).get("csrf", [""])[0]):
        return expired_form(request)
    await site.run(subscriptions.unsubscribe, site.store, sid, utcnow())
    if one_click:  # RFC 8058: done, no page, no redirect
        return PlainTextResponse("Unsubscribed.\n")
    return simple(
        request,
        "You are unsubscribed",
        "No more digests will be sent. Changed your mind?",
        link=f"/preferences/{await site.sign(sid, 'preferences')}",
        link_text="Subscribe again",
    )


# -- preferences and archive --------------------------------------------------------------------


def preference_links(site: Site, sid: int, token: str) -> dict[str, Any]:
    """The links on the preferences page (worker thread: signing reads the salt)."""
    return {
        "action": f"/preferences/{token}",
        "archive": f"/archive/{site.signer.sign(sid, 'archive')}",
        "unsubscribe": f"/unsubscribe/{site.signer.sign(sid, 'unsubscribe')}",
        "feeds": [own_feed(site, sid)],
    }


def subscriber_page(site: Site, token: str, purpose: str) -> tuple[int, Subscriber] | None:
    """The subscriber a signed link names, and their row (worker thread)."""
    sid = site.signer.verify(token, purpose)
    sub = site.store.subscriber(sid) if sid is not None else None
    return (sid, sub) if sid is not None and sub is not None else None


async def preferences(request: Request) -> Response:
    site = site_of(request)
    token = request.path_params["token"]
    found = await site.run(subscriber_page, site, token, "preferences")
    if found is None:
        return bad_link(request)
    sid, sub = found
    links = await site.run(preference_links, site, sid, token)
    if request.method == "GET":
        return page(request, "web/preferences.html.j2", sub=sub, **links)
    data, csrf_ok = await form_of(request)
    if not csrf_ok:
        errors = ["The form had expired; save again."]
        return page(request, "web/preferences.html.j2", 400, sub=sub, errors=errors, **links)
    try:
        new = subscriber_from_form(data, sub.email, site.topic_names)
    except SubscriberError as exc:
        return page(request, "web/preferences.html.j2", 422, sub=sub, errors=form_errors(exc), **links)
    saved = await site.run(
        subscriptions.save_preferences, site.store, sub, new, paused=bool(data.get("paused")), now=utcnow()
    )
    message = "Saved: it applies from your next digest."
    return page(request, "web/preferences.html.j2", sub=saved, message=message, **links)


def archive_listing(
    site: Site, token: str, number: int
) -> tuple[list[archive.SentDigest], bool, dict[str, str]] | None:
    """Page `number` of the digests sent to whom the link names, whether an older page exists,
    and the link to their own feed; None: not a valid link (worker thread: one hop per page)."""
    sid = site.signer.verify(token, "archive")
    if sid is None:
        return None
    sent, more = archive.sent_digests(site.store, sid, page=number, per_page=ARCHIVE_PAGE)
    return sent, more, own_feed(site, sid)


async def archive_list(request: Request) -> Response:
    site = site_of(request)
    token = request.path_params["token"]
    asked = request.query_params.get("page", "1")
    number = int(asked) if asked.isdigit() and 0 < int(asked) < 10**6 else 1
    found = await site.run(archive_listing, site, token, number)
    if found is None:
        return bad_link(request)
    sent, more, feed = found
    items = [{"period": s.period, "count": s.stories, "url": f"/archive/{token}/{s.period}"} for s in sent]
    older = f"/archive/{token}?page={number + 1}" if more else None
    feeds = [*topic_feeds(site), feed]
    return page(
        request, "web/archive.html.j2", items=items, older=older, search=f"/search/{token}", feeds=feeds
    )


def digest_page(site: Site, token: str | None, sid: int | None, period: str) -> tuple[bool, str | None]:
    """(whether the link is valid, the sent digest as HTML or None: no such digest), for a signed
    link's `token` or, in a public archive, a bare `sid` (worker thread)."""
    if token is not None:
        sid = site.signer.verify(token, "archive")
    if sid is None:
        return False, None
    return True, archive.archived_digest(site.loaded, site.store, site.renderer, site.signer, sid, period)


async def archived(request: Request) -> Response:
    site = site_of(request)
    params = request.path_params
    valid, html = await site.run(digest_page, site, params["token"], None, params["period"])
    if not valid:
        return bad_link(request)
    return simple(request, "No such digest", "", 404) if html is None else HTMLResponse(html)


async def archived_public(request: Request) -> Response:
    # delivery.archive: public -> a digest's web copy needs no secret
    site, params = site_of(request), request.path_params
    html = None
    if site.public and params["sid"].isdigit():
        _, html = await site.run(digest_page, site, None, int(params["sid"]), params["period"])
    return simple(request, "No such digest", "", 404) if html is None else HTMLResponse(html)


async def static(request: Request) -> Response:
    name = request.path_params["name"]
    media = STATIC.get(name)
    if media is None:
        return PlainTextResponse("not found", 404)
    for folder in (site_of(request).user_dir, default_template_dir()):
        path = folder / name
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            return Response(text, media_type=media, headers={"Cache-Control": "max-age=3600"})
    return PlainTextResponse("not found", 404)


# -- the stories as Atom feeds, and search ------------------------------------------------------


def topic_feeds(site: Site) -> list[dict[str, str]]:
    if not site.public:
        return []
    return [{"title": f"{t['title']} (Atom)", "href": f"/feeds/{t['name']}.atom"} for t in site.topics]


def own_feed(site: Site, sid: int) -> dict[str, str]:
    """The link to a subscriber's own Atom feed (signing reads the salt: worker thread)."""
    return {"title": "Your stories (Atom)", "href": f"/feeds/subscriber/{site.signer.sign(sid, 'feed')}.atom"}


def atom_response(
    request: Request, info: FeedInfo, stories: list[FeedStory], titles: Mapping[str, str | None]
) -> Response:
    body = atom_feed(info, stories, titles)
    # a strong validator of the bytes themselves (RFC 9110 §8.8.3), and the newest story's
    # change as Last-Modified; If-None-Match wins over If-Modified-Since (§13.1.3)
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    modified = email.utils.format_datetime(feed_updated(stories), usegmt=True)
    headers = {"ETag": etag, "Last-Modified": modified, "Cache-Control": "max-age=300"}
    asked = request.headers.get("if-none-match")
    since = request.headers.get("if-modified-since")
    if asked is not None:
        fresh = etag in {t.strip().removeprefix("W/") for t in asked.split(",")} or asked.strip() == "*"
    elif since is not None:
        try:
            fresh = email.utils.parsedate_to_datetime(since) >= feed_updated(stories)
        except (TypeError, ValueError):
            fresh = False
    else:
        fresh = False
    if fresh:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/atom+xml; charset=utf-8", headers=headers)


def stories_for(
    site: Site, topics: tuple[str, ...] | list[str] = (), tags: tuple[str, ...] = ()
) -> tuple[list[FeedStory], dict[str, str | None]]:
    """A feed's stories and the feeds' titles (worker thread)."""
    return feed_stories(site.loaded, site.store, topics=topics, tags=tags), feed_titles(site.store)


async def topic_feed(request: Request) -> Response:
    site = site_of(request)
    topic = request.path_params["topic"]
    if not site.public or topic not in site.topic_names:
        return PlainTextResponse("no such feed\n", 404)
    stories, titles = await site.run(stories_for, site, [topic])
    info = FeedInfo(
        site=site.base,
        self_url=f"{site.base}/feeds/{topic}.atom",
        key=f"topic/{topic}",
        title=f"{site.delivery.list_name}: {topic_title(topic)}",
        author=site.delivery.list_name,
        alternate=f"{site.base}/subscribe",
    )
    return atom_response(request, info, stories, titles)


async def subscriber_feed(request: Request) -> Response:
    site = site_of(request)
    token = request.path_params["token"]
    found = await site.run(subscriber_page, site, token, "feed")
    if found is None:
        return PlainTextResponse("this feed link is not valid; use the one on your archive page\n", 404)
    sid, sub = found
    stories, titles = await site.run(stories_for, site, sub.topics, sub.tags)
    info = FeedInfo(
        site=site.base,
        self_url=f"{site.base}/feeds/subscriber/{token}.atom",
        key=f"subscriber/{sid}",
        title=site.delivery.list_name,
        author=site.delivery.list_name,
        alternate=f"{site.base}/archive/{await site.sign(sid, 'archive')}",
    )
    return atom_response(request, info, stories, titles)


async def search_page(request: Request, action: str, feeds: list[dict[str, str]]) -> Response:
    site = site_of(request)
    words = request.query_params.get("q", "")[:200].strip()
    views = await site.run(search_stories, site.loaded, site.store, words) if words else []
    found = [
        {
            "title": (rep := v.representative.stored.entry).title,
            "href": safe_href(rep.link),
            "when": max(m.stored.entry.published for m in v.entries).strftime("%Y-%m-%d"),
            "outlet": v.outlets[0] if v.outlets else "",
            "others": v.outlets[1:],
            "tags": v.tags,
        }
        for v in views
    ]
    return page(request, "web/search.html.j2", words=words, found=found, action=action, feeds=feeds)


async def search_public(request: Request) -> Response:
    site = site_of(request)
    if not site.public:
        return simple(request, "No such page", "Search from your archive page.", 404)
    return await search_page(request, "/search", topic_feeds(site))


async def search_mine(request: Request) -> Response:
    site = site_of(request)
    token = request.path_params["token"]
    sid = await site.verify(token, "archive")
    if sid is None:
        return bad_link(request)
    return await search_page(
        request, f"/search/{token}", [*topic_feeds(site), await site.run(own_feed, site, sid)]
    )


async def home(request: Request) -> Response:
    return RedirectResponse("/subscribe", 303)


ROUTES = [
    Route("/", home),
    Route("/subscribe", subscribe_form, methods=["GET"]),
    Route("/subscribe", subscribe, methods=["POST"]),
    Route("/confirm/{token}", confirm, methods=["GET", "POST"]),
    Route("/unsubscribe/{token}", unsubscribe, methods=["GET", "POST"]),
    Route("/preferences/{token}", preferences, methods=["GET", "POST"]),
    Route("/archive/public/{sid}/{period}", archived_public),
    Route("/archive/{token}", archive_list),
    Route("/archive/{token}/{period}", archived),
    Route("/static/{name}", static),
    Route("/feeds/{topic}.atom", topic_feed),
    Route("/feeds/subscriber/{token}.atom", subscriber_feed),
    Route("/search", search_public),
    Route("/search/{token}", search_mine),
]
