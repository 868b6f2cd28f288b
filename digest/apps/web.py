"""`digest serve`: the subscriber's side on the web. A small Starlette app.

    /subscribe              form -> a confirmation mail with a signed, expiring link (double opt-in)
    /confirm/{token}        a page with one button; the POST activates the subscriber
    /unsubscribe/{token}    a page with one button; an RFC 8058 one-click POST unsubscribes at once
    /preferences/{token}    topics, tags, cadence, time, zone, format, pause
    /archive/{token}        the digests sent, each at a stable URL
    /feeds/{topic}.atom     a topic's newest stories as Atom (public when delivery.archive is)
    /feeds/subscriber/{token}.atom   a subscriber's own topics and tags as Atom (signed link)
    /search, /search/{token}         stories by words in their titles and summaries (ranked)

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

import email.utils
import hashlib
import ipaddress
import secrets
import time
from collections import defaultdict, deque
from dataclasses import asdict, replace
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

import jinja2
from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from digest.config import LoadedConfig
from digest.errors import DigestError, SubscriberError
from digest.mail.render import default_template_dir
from digest.mail.tokens import Signer, load_secret, store_salts
from digest.mail.transports import make_transport
from digest.model.atom import FeedInfo, FeedStory, atom_feed, feed_updated
from digest.model.links import safe_href
from digest.model.stories import topic_title
from digest.model.subscribers import CONFIRM_MAX_AGE, PREFERENCE_FIELDS, WEEKDAYS, Subscriber, make_subscriber
from digest.service.fetching import open_store, utcnow
from digest.service.lookup import feed_stories, search_stories
from digest.service.lookup import feed_titles as lookup_titles

MAX_BODY = 64 * 1024  # a form is a few hundred bytes; eight 50 MiB bodies took the server to 476 MB
FORM_MAIL_TIMEOUT = 5.0  # a visitor waits for the confirmation mail: one try, not the send loop's retries
ARCHIVE_PAGE = 50
PER_ADDRESS_SECONDS = 600  # at most one mail to one address in ten minutes
PER_CLIENT = (10, 3600)  # at most ten subscribe attempts from one client an hour
CSP = (
    "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


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

    def __init__(self, app: Any, limit: int = MAX_BODY) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > self.limit:
            response = PlainTextResponse(f"request body over {self.limit} bytes\n", 413)
            return await response(scope, receive, send)
        seen, started = 0, False

        async def capped() -> Any:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:  # chunked, or a Content-Length that lied
                raise _TooLarge
            return message

        async def sending(message: Any) -> None:
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


def create_app(loaded: LoadedConfig) -> Starlette:
    d = loaded.config.delivery
    secret = load_secret(d.secret, loaded.base_dir)
    signer = Signer(secret, store_salts(lambda: open_store(loaded)))
    user_dir = loaded.base_dir / (d.templates or "templates")
    dirs = [str(p) for p in (user_dir, default_template_dir()) if p.is_dir()]
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(dirs), autoescape=True, undefined=jinja2.StrictUndefined
    )
    limits = RateLimit()
    trusted = [ipaddress.ip_network(n, strict=False) for n in loaded.config.web.trusted_proxies]
    # A sign-up carries the preferences asked for, signed, so that nothing is written to a known
    # address's row before its owner confirms; and the row's updated_at when the link was made, so
    # that the link works once (confirming changes it, and so does anything done since).
    requests = URLSafeTimedSerializer(secret, salt="sign-up")
    base = d.base_url.rstrip("/")
    rules = loaded.rules
    topics = [{"name": t.name, "title": topic_title(t.name)} for t in rules.topics]
    tags = [t.name for t in rules.tags]

    def page(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        csrf = request.cookies.get("csrf") or secrets.token_urlsafe(24)
        ctx.setdefault("message", None)
        ctx.setdefault("errors", [])
        ctx.setdefault("feeds", [])
        html = env.get_template(name).render(
            list_name=d.list_name, csrf=csrf, topics=topics, tags=tags, weekdays=WEEKDAYS, **ctx
        )
        response = HTMLResponse(html, status_code=status)
        response.set_cookie("csrf", csrf, httponly=True, samesite="strict", secure=base.startswith("https"))
        return response

    def simple(request: Request, heading: str, text: str = "", status: int = 200, **ctx: Any) -> HTMLResponse:
        ctx = {"action": None, "button": "", "link": None, "link_text": "", **ctx}
        return page(request, "web/page.html.j2", status, heading=heading, text=text, **ctx)

    def csrf_matches(request: Request, sent: object) -> bool:
        cookie = request.cookies.get("csrf")
        return bool(cookie) and secrets.compare_digest(str(sent or ""), cookie or "")

    def bad_link(request: Request) -> HTMLResponse:
        return simple(request, "This link is not valid", "Use the link in your latest digest.", 400)

    async def form_of(request: Request) -> tuple[dict[str, Any], bool]:
        form = await request.form()
        data: dict[str, Any] = {k: form.getlist(k) if k in ("topics", "tags") else form.get(k) for k in form}
        return data, csrf_matches(request, data.pop("csrf", ""))

    def subscriber_from(data: dict[str, Any], email: str) -> Subscriber:
        fields = {k: v for k, v in data.items() if k in PREFERENCE_FIELDS}
        sub = make_subscriber({**fields, "email": email}, where="form")
        if set(sub.topics) == {t["name"] for t in topics}:
            sub = replace(sub, topics=())  # every topic: future topics too
        return sub

    async def mail(to: str, subject: str, text: str, tag: str) -> None:
        import email.utils

        from digest.mail.render import domain_of, plain_message

        msg_id = f"<{tag}.{secrets.token_hex(8)}@{domain_of(d.sender)}>"
        data = plain_message(
            sender=d.sender, recipient=to, subject=subject, text=text, msg_id=msg_id, date=utcnow()
        )
        # someone is waiting for the page: one short try (SMTP down took 14.5 s with the retries)
        smtp = d.smtp.model_copy(update={"retries": 0, "timeout": min(d.smtp.timeout, FORM_MAIL_TIMEOUT)})
        transport = make_transport(d.model_copy(update={"smtp": smtp}), loaded.base_dir)
        await transport.open()
        try:
            await transport.send(email.utils.parseaddr(d.sender)[1] or d.sender, to, data, msg_id)
        finally:
            await transport.close()

    # -- subscribe and confirm -----------------------------------------------------------------

    async def subscribe(request: Request) -> Response:
        blank = Subscriber("x@example.org", timezone="UTC")
        if request.method == "GET":
            return page(request, "web/subscribe.html.j2", sub=blank, email="")
        data, csrf_ok = await form_of(request)
        if not csrf_ok:
            return simple(
                request, "Please try again", "The form had expired. Reload the page and send it again.", 400
            )
        peer = request.client.host if request.client else None
        client = client_address(peer, request.headers.get("x-forwarded-for"), trusted)
        if not limits.client_allowed(client):
            return simple(request, "Too many attempts", "Please wait an hour before trying again.", 429)
        try:
            sub = subscriber_from(data, str(data.get("email") or ""))
            unknown = set(sub.topics) - {t["name"] for t in topics}
            if unknown:
                raise SubscriberError(f"unknown topic {', '.join(sorted(unknown))}")
        except SubscriberError as exc:
            errors = [str(e).split(": ", 1)[-1] for e in str(exc).splitlines()]
            return page(
                request, "web/subscribe.html.j2", 422, sub=blank, email=data.get("email"), errors=errors
            )
        if limits.mail_allowed(sub.email):
            with open_store(loaded) as store:
                existing = store.list_subscribers(email=sub.email)
                if existing and existing[0].status == "active":
                    sid, kind = existing[0].id, "known"
                elif existing and existing[0].status == "complained":
                    # they reported our mail as spam: never mailed again, not even a confirmation
                    sid, kind = existing[0].id, "complained"
                else:
                    # a new address gets a pending row (deleted if never confirmed); a known one,
                    # unsubscribed or pending, is left as it is until its owner confirms
                    if existing:
                        sid = existing[0].id
                    else:
                        sid, _ = store.add_subscriber(replace(sub, status="pending"), utcnow(), update=False)
                    kind = "new"
                stamp = store.subscriber_stamp(sid) if sid is not None else None
            assert sid is not None and stamp is not None
            if kind == "complained":
                text = ""
            elif kind == "known":
                link = f"{base}/preferences/{signer.sign(sid, 'preferences')}"
                text = (
                    f"Someone (perhaps you) asked to subscribe {sub.email} to {d.list_name}.\n\n"
                    f"You are already subscribed. To change what you receive, open:\n{link}\n"
                )
            else:
                asked = {k: v for k, v in asdict(sub).items() if k in (*PREFERENCE_FIELDS, "name")}
                token = requests.dumps({"id": sid, "stamp": stamp.isoformat(), "asked": asked})
                link = f"{base}/confirm/{token}"
                text = (
                    f"Please confirm that {sub.email} should receive {d.list_name}:\n\n{link}\n\n"
                    "The link works for two days. If you did not ask for this, ignore this mail."
                )
            try:
                if kind != "complained":
                    await mail(sub.email, f"Confirm your subscription to {d.list_name}", text, "confirm")
            except DigestError as exc:
                limits.mail_failed(sub.email)  # nothing was sent: the retry may send it
                reason = str(exc).splitlines()[0]
                return simple(
                    request, "We could not send the mail", f"{reason}. Please try again later.", 503
                )
        # the same words for new and known addresses: the page reveals nothing
        return simple(
            request,
            "Check your inbox",
            f"We have sent a message to {sub.email}. Open the link in it to confirm.",
        )

    def sign_up_of(token: str) -> tuple[int, datetime, dict[str, Any]] | None:
        try:
            data = requests.loads(token, max_age=CONFIRM_MAX_AGE)
            return int(data["id"]), datetime.fromisoformat(data["stamp"]), dict(data["asked"])
        except (BadSignature, KeyError, TypeError, ValueError):  # SignatureExpired is a BadSignature
            return None

    async def confirm(request: Request) -> Response:
        token = request.path_params["token"]
        signed = sign_up_of(token)
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
            return simple(request, "Please try again", "Reload the page and press the button again.", 400)
        sid, stamp, asked = signed
        with open_store(loaded) as store:
            sub = store.subscriber(sid)
            if sub is None:
                return simple(request, "Unknown subscription", "Subscribe again.", 404)
            try:
                wanted = make_subscriber({**asked, "email": sub.email}, where="confirmation link")
            except SubscriberError:
                return bad_link(request)
            if not store.confirm_subscriber(sid, stamp, wanted, utcnow()):
                # used already, or the subscription changed since (unsubscribed, say): a replayed
                # link must not undo that
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
            f"{sub.email} will receive {d.list_name}.",
            link=f"/preferences/{signer.sign(sid, 'preferences')}",
            link_text="Choose what and when",
        )

    # -- unsubscribe ---------------------------------------------------------------------------

    async def unsubscribe(request: Request) -> Response:
        token = request.path_params["token"]
        sid = signer.verify(token, "unsubscribe")
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
            return simple(request, "Please try again", "Reload the page and press the button again.", 400)
        with open_store(loaded) as store:
            sub = store.subscriber(sid)
            if sub is not None and sub.status not in ("unsubscribed", "complained"):
                store.set_status(sid, "unsubscribed", utcnow())  # idempotent: a second time changes nothing
        if one_click:  # RFC 8058: done, no page, no redirect
            return PlainTextResponse("Unsubscribed.\n")
        return simple(
            request,
            "You are unsubscribed",
            "No more digests will be sent. Changed your mind?",
            link=f"/preferences/{signer.sign(sid, 'preferences')}",
            link_text="Subscribe again",
        )

    # -- preferences and archive ---------------------------------------------------------------

    async def preferences(request: Request) -> Response:
        token = request.path_params["token"]
        sid = signer.verify(token, "preferences")
        with open_store(loaded) as store:
            sub = store.subscriber(sid) if sid is not None else None
        if sid is None or sub is None:
            return bad_link(request)
        links: dict[str, Any] = {
            "action": f"/preferences/{token}",
            "archive": f"/archive/{signer.sign(sid, 'archive')}",
            "unsubscribe": f"/unsubscribe/{signer.sign(sid, 'unsubscribe')}",
            "feeds": [own_feed(sid)],
        }
        if request.method == "GET":
            return page(request, "web/preferences.html.j2", sub=sub, **links)
        data, csrf_ok = await form_of(request)
        if not csrf_ok:
            return page(
                request,
                "web/preferences.html.j2",
                400,
                sub=sub,
                errors=["The form had expired; save again."],
                **links,
            )
        try:
            new = subscriber_from(data, sub.email)
        except SubscriberError as exc:
            errors = [str(e).split(": ", 1)[-1] for e in str(exc).splitlines()]
            return page(request, "web/preferences.html.j2", 422, sub=sub, errors=errors, **links)
        with open_store(loaded) as store:
            store.save_preferences(sid, new, utcnow())
            status = (
                "unsubscribed" if data.get("paused") else ("active" if sub.status != "pending" else "pending")
            )
            if sub.status == "complained":  # a complaint is for good: saving never mails them again
                status = "complained"
            if status != sub.status:
                store.set_status(sid, status, utcnow())
            saved = store.subscriber(sid)
        return page(
            request,
            "web/preferences.html.j2",
            sub=saved,
            message="Saved: it applies from your next digest.",
            **links,
        )

    async def archive(request: Request) -> Response:
        token = request.path_params["token"]
        sid = signer.verify(token, "archive")
        if sid is None:
            return bad_link(request)
        asked = request.query_params.get("page", "1")
        number = int(asked) if asked.isdigit() and 0 < int(asked) < 10**6 else 1
        with open_store(loaded) as store:  # one page and one more row: is there an older page?
            rows = store.sent_digests(sid, limit=ARCHIVE_PAGE + 1, offset=(number - 1) * ARCHIVE_PAGE)
        items = [
            {"period": r["period"], "count": len(r["story_ids"]), "url": f"/archive/{token}/{r['period']}"}
            for r in rows[:ARCHIVE_PAGE]
        ]
        older = f"/archive/{token}?page={number + 1}" if len(rows) > ARCHIVE_PAGE else None
        return page(
            request,
            "web/archive.html.j2",
            items=items,
            older=older,
            search=f"/search/{token}",
            feeds=[*topic_feeds(), own_feed(sid)],
        )

    async def archived(request: Request) -> Response:
        token, period = request.path_params["token"], request.path_params["period"]
        sid = signer.verify(token, "archive")
        if sid is None:
            return bad_link(request)
        return await show_archived(request, sid, period)

    async def archived_public(request: Request) -> Response:
        # delivery.archive: public -> a digest's web copy needs no secret
        if d.archive != "public" or not request.path_params["sid"].isdigit():
            return simple(request, "No such digest", "", 404)
        return await show_archived(request, int(request.path_params["sid"]), request.path_params["period"])

    async def show_archived(request: Request, sid: int, period: str) -> Response:
        from digest.service.sending import Mailer

        with open_store(loaded) as store:
            sub = store.subscriber(sid)
            row = store.delivery(sid, period)
            if sub is None or row is None or row["state"] != "sent":
                return simple(request, "No such digest", "", 404)
            html = Mailer(loaded, store).archived_html(sub, period, row["story_ids"], row["assembled_at"])
        return HTMLResponse(html)

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        # style.css and style-head.css: the archived digests' look, linked instead of inlined so
        # that the CSP can keep style-src 'self' (inline styles would need 'unsafe-inline')
        media = {
            "web.css": "text/css",
            "style.css": "text/css",
            "style-head.css": "text/css",
            "app.js": "text/javascript",
        }.get(name)
        if media is None:
            return PlainTextResponse("not found", 404)
        for folder in (user_dir, default_template_dir()):
            path = folder / name
            if path.is_file():
                return Response(
                    path.read_text(encoding="utf-8"),
                    media_type=media,
                    headers={"Cache-Control": "max-age=3600"},
                )
        return PlainTextResponse("not found", 404)

    # -- the stories as Atom feeds, and search ----------------------------------------------------

    public = d.archive == "public"  # the topic feeds and the open search follow the archive's rule
    topic_names = [t["name"] for t in topics]

    def topic_feeds() -> list[dict[str, str]]:
        return [
            {"title": f"{t['title']} (Atom)", "href": f"/feeds/{t['name']}.atom"} for t in topics if public
        ]

    def atom_response(request: Request, info: FeedInfo, stories: list[FeedStory], titles: Any) -> Response:
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

    async def topic_feed(request: Request) -> Response:
        topic = request.path_params["topic"]
        if not public or topic not in topic_names:
            return PlainTextResponse("no such feed\n", 404)
        with open_store(loaded) as store:
            stories = feed_stories(loaded, store, topics=[topic])
            titles = lookup_titles(store)
        info = FeedInfo(
            site=base,
            self_url=f"{base}/feeds/{topic}.atom",
            key=f"topic/{topic}",
            title=f"{d.list_name}: {topic_title(topic)}",
            author=d.list_name,
            alternate=f"{base}/subscribe",
        )
        return atom_response(request, info, stories, titles)

    async def subscriber_feed(request: Request) -> Response:
        token = request.path_params["token"]
        sid = signer.verify(token, "feed")
        with open_store(loaded) as store:
            sub = store.subscriber(sid) if sid is not None else None
            if sid is None or sub is None:
                gone = "this feed link is not valid; use the one on your archive page\n"
                return PlainTextResponse(gone, 404)
            stories = feed_stories(loaded, store, topics=sub.topics, tags=sub.tags)
            titles = lookup_titles(store)
        info = FeedInfo(
            site=base,
            self_url=f"{base}/feeds/subscriber/{token}.atom",
            key=f"subscriber/{sid}",
            title=d.list_name,
            author=d.list_name,
            alternate=f"{base}/archive/{signer.sign(sid, 'archive')}",
        )
        return atom_response(request, info, stories, titles)

    def search_page(request: Request, action: str, feeds: list[dict[str, str]]) -> Response:
        words = request.query_params.get("q", "")[:200].strip()
        found: list[dict[str, Any]] = []
        if words:
            with open_store(loaded) as store:
                views = search_stories(loaded, store, words)
            for v in views:
                rep = v.representative.stored.entry
                found.append(
                    {
                        "title": rep.title,
                        "href": safe_href(rep.link),
                        "when": max(m.stored.entry.published for m in v.entries).strftime("%Y-%m-%d"),
                        "outlet": v.outlets[0] if v.outlets else "",
                        "others": v.outlets[1:],
                        "tags": v.tags,
                    }
                )
        return page(request, "web/search.html.j2", words=words, found=found, action=action, feeds=feeds)

    async def search_public(request: Request) -> Response:
        if not public:
            return simple(request, "No such page", "Search from your archive page.", 404)
        return search_page(request, "/search", topic_feeds())

    async def search_mine(request: Request) -> Response:
        token = request.path_params["token"]
        sid = signer.verify(token, "archive")
        if sid is None:
            return bad_link(request)
        return search_page(request, f"/search/{token}", [*topic_feeds(), own_feed(sid)])

    def own_feed(sid: int) -> dict[str, str]:
        return {"title": "Your stories (Atom)", "href": f"/feeds/subscriber/{signer.sign(sid, 'feed')}.atom"}

    async def home(request: Request) -> Response:
        return RedirectResponse("/subscribe", 303)

    class SecurityHeaders(BaseHTTPMiddleware):
        async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
            response = await call_next(request)
            response.headers["Content-Security-Policy"] = CSP
            response.headers["X-Content-Type-Options"] = "nosniff"
            response.headers["Referrer-Policy"] = "no-referrer"
            response.headers["X-Frame-Options"] = "DENY"
            return response

    routes = [
        Route("/", home),
        Route("/subscribe", subscribe, methods=["GET", "POST"]),
        Route("/confirm/{token}", confirm, methods=["GET", "POST"]),
        Route("/unsubscribe/{token}", unsubscribe, methods=["GET", "POST"]),
        Route("/preferences/{token}", preferences, methods=["GET", "POST"]),
        Route("/archive/public/{sid}/{period}", archived_public),
        Route("/archive/{token}", archive),
        Route("/archive/{token}/{period}", archived),
        Route("/static/{name}", static),
        Route("/feeds/{topic}.atom", topic_feed),
        Route("/feeds/subscriber/{token}.atom", subscriber_feed),
        Route("/search", search_public),
        Route("/search/{token}", search_mine),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(BodyCap), Middleware(SecurityHeaders)])
    return app
