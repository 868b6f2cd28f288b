"""`digest serve`: the subscriber's side on the web. A small Starlette app.

    /subscribe              form -> a confirmation mail with a signed, expiring link (double opt-in)
    /confirm/{token}        a page with one button; the POST activates the subscriber
    /unsubscribe/{token}    a page with one button; an RFC 8058 one-click POST unsubscribes at once
    /preferences/{token}    topics, tags, cadence, time, zone, format, pause
    /archive/{token}        the digests sent, each at a stable URL

A GET never changes anything (mail scanners prefetch links). Every form carries a CSRF token that
must match a cookie; the one-click POST carries none (mailbox providers send no cookies, RFC 8058
§3.2) and is identified by its signed URL alone. Pages send a strict Content-Security-Policy and
load nothing from other sites. Re-subscribing a known address mails that address and says on the
page exactly what a new address would get (no address enumeration); a per-address and per-client
limit stops mail-bombing.
"""

from __future__ import annotations

import secrets
import time
from collections import defaultdict, deque
from dataclasses import replace
from email.message import EmailMessage
from typing import Any
from urllib.parse import parse_qs

import jinja2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from .config import LoadedConfig
from .deliver import make_transport
from .errors import AddressError, DeliveryError
from .pipeline import open_store, utcnow
from .render import POLICY, default_template_dir
from .stories import topic_title
from .subscribers import PREFERENCE_FIELDS, WEEKDAYS, Subscriber, make_subscriber
from .tokens import Signer, load_secret, store_salts

CONFIRM_MAX_AGE = 2 * 86400  # a confirmation link works for two days
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


def create_app(loaded: LoadedConfig) -> Starlette:
    d = loaded.config.delivery
    signer = Signer(load_secret(d.secret, loaded.base_dir), store_salts(lambda: open_store(loaded)))
    user_dir = loaded.base_dir / (d.templates or "templates")
    dirs = [str(p) for p in (user_dir, default_template_dir()) if p.is_dir()]
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(dirs), autoescape=True, undefined=jinja2.StrictUndefined
    )
    limits = RateLimit()
    base = d.base_url.rstrip("/")
    rules = loaded.rules
    topics = [{"name": t.name, "title": topic_title(t.name)} for t in rules.topics]
    tags = [t.name for t in rules.tags]

    def page(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        csrf = request.cookies.get("csrf") or secrets.token_urlsafe(24)
        ctx.setdefault("message", None)
        ctx.setdefault("errors", [])
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
        msg = EmailMessage(policy=POLICY)
        msg["From"], msg["To"], msg["Subject"] = d.sender, to, subject
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(text)
        transport = make_transport(d, loaded.base_dir)
        import email.utils

        await transport.open()
        try:
            await transport.send(
                email.utils.parseaddr(d.sender)[1] or d.sender,
                to,
                msg.as_bytes(policy=POLICY),
                f"<{tag}.{secrets.token_hex(8)}@digest>",
            )
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
        client = request.client.host if request.client else "unknown"
        if not limits.client_allowed(client):
            return simple(request, "Too many attempts", "Please wait an hour before trying again.", 429)
        try:
            sub = subscriber_from(data, str(data.get("email") or ""))
            unknown = set(sub.topics) - {t["name"] for t in topics}
            if unknown:
                raise AddressError(f"unknown topic {', '.join(sorted(unknown))}")
        except AddressError as exc:
            errors = [str(e).split(": ", 1)[-1] for e in str(exc).splitlines()]
            return page(
                request, "web/subscribe.html.j2", 422, sub=blank, email=data.get("email"), errors=errors
            )
        now = utcnow()
        with open_store(loaded) as store:
            existing = store.list_subscribers(email=sub.email)
            if existing and existing[0].status == "active":
                sid, kind = existing[0].id, "known"
            else:
                sid, _ = store.add_subscriber(replace(sub, status="pending"), now, update=True)
                kind = "new"
        if limits.mail_allowed(sub.email):
            assert sid is not None
            if kind == "known":
                link = f"{base}/preferences/{signer.sign(sid, 'preferences')}"
                text = (
                    f"Someone (perhaps you) asked to subscribe {sub.email} to {d.list_name}.\n\n"
                    f"You are already subscribed. To change what you receive, open:\n{link}\n"
                )
            else:
                link = f"{base}/confirm/{signer.sign_timed(sid, 'confirm')}"
                text = (
                    f"Please confirm that {sub.email} should receive {d.list_name}:\n\n{link}\n\n"
                    "The link works for two days. If you did not ask for this, ignore this mail."
                )
            try:
                await mail(sub.email, f"Confirm your subscription to {d.list_name}", text, "confirm")
            except DeliveryError as exc:
                return simple(request, "We could not send the mail", f"{exc}. Please try again later.", 503)
        # the same words for new and known addresses: the page reveals nothing
        return simple(
            request,
            "Check your inbox",
            f"We have sent a message to {sub.email}. Open the link in it to confirm.",
        )

    async def confirm(request: Request) -> Response:
        token = request.path_params["token"]
        sid = signer.verify_timed(token, "confirm", CONFIRM_MAX_AGE)
        if sid is None:
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
        with open_store(loaded) as store:
            sub = store.subscriber(sid)
            if sub is None:
                return simple(request, "Unknown subscription", "Subscribe again.", 404)
            if sub.status != "active":
                store.set_status(sid, "active", utcnow())
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
            if sub is not None and sub.status != "unsubscribed":
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
        except AddressError as exc:
            errors = [str(e).split(": ", 1)[-1] for e in str(exc).splitlines()]
            return page(request, "web/preferences.html.j2", 422, sub=sub, errors=errors, **links)
        with open_store(loaded) as store:
            store.save_preferences(sid, new, utcnow())
            status = (
                "unsubscribed" if data.get("paused") else ("active" if sub.status != "pending" else "pending")
            )
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
        with open_store(loaded) as store:
            rows = [
                r
                for r in store.deliveries_report(limit=500)
                if r["subscriber_id"] == sid and r["state"] == "sent"
            ]
        items = [
            {"period": r["period"], "count": len(r["story_ids"]), "url": f"/archive/{token}/{r['period']}"}
            for r in rows
        ]
        return page(request, "web/archive.html.j2", items=items)

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
        from .dispatch import Mailer

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
    ]
    app = Starlette(routes=routes, middleware=[Middleware(SecurityHeaders)])
    return app
