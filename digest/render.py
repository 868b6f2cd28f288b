"""Render a Digest into an e-mail: Jinja2 templates, CSS inlined, headers that cannot be injected.

Templates come from `delivery.templates` (default: `templates/` beside feeds.yaml, if present),
then from the defaults inside the package. HTML templates are autoescaped and feed text is never
marked safe; the subject is built from our own template, one line, control characters removed
(notes §4.1). Messages are serialised with max_line_length=998 so that List-Unsubscribe is never
folded into encoded-words (notes §4.1, cpython #85725).
"""

from __future__ import annotations

import email.policy
import email.utils
import hashlib
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from importlib import resources
from pathlib import Path
from zoneinfo import ZoneInfo

import jinja2

from .compose import Digest
from .errors import TemplateError

POLICY = email.policy.SMTP.clone(max_line_length=998)
SUBJECT_MAX = 150
TEMPLATES = ("digest.html.j2", "digest.txt.j2", "subject.j2", "_story.html.j2", "style.css")


def default_template_dir() -> Path:
    packaged = resources.files("digest").joinpath("_defaults", "templates")
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "templates"


@dataclass(frozen=True, slots=True)
class Links:
    unsubscribe: str  # https, signed: opens a page with one button
    one_click: str  # the RFC 8058 POST target
    mailto: str
    preferences: str
    archive: str | None = None


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    text: str
    html: str | None


def clean_header(value: str, limit: int = SUBJECT_MAX) -> str:
    """One line: control and format characters dropped, whitespace collapsed, capped."""
    value = "".join(" " if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c for c in value)
    value = " ".join(value.split())
    return value if len(value) <= limit else value[: limit - 1].rstrip() + "…"


class Renderer:
    def __init__(self, template_dir: Path | None = None, *, list_name: str) -> None:
        dirs = [str(d) for d in (template_dir, default_template_dir()) if d is not None and d.is_dir()]
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(dirs),
            autoescape=jinja2.select_autoescape(enabled_extensions=("html", "html.j2"), default=False),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.list_name = list_name
        try:
            self.stylesheet = self.env.loader.get_source(self.env, "style.css")[0]  # type: ignore[union-attr]
            self._html = self.env.get_template("digest.html.j2")
            self._text = self.env.get_template("digest.txt.j2")
            self._subject = self.env.get_template("subject.j2")
        except jinja2.TemplateNotFound as exc:
            raise TemplateError(
                f"template {exc.name} not found in {', '.join(dirs)}; copy it from the "
                "shipped templates/ folder"
            ) from None
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(
                f"{exc.filename or exc.name}: line {exc.lineno}: {exc.message}; fix the template"
            ) from None
        import css_inline

        # never fetch remote stylesheets; keep @media for small screens (notes §4.1)
        self._inliner = css_inline.CSSInliner(load_remote_stylesheets=False, keep_at_rules=True)

    def render(self, digest: Digest, links: Links) -> Rendered:
        s = digest.subscriber
        zone = ZoneInfo(s.timezone)

        def local_time(t: datetime) -> str:
            return t.astimezone(zone).strftime("%d %b %Y, %H:%M")

        ctx = {
            "digest": digest,
            "subscriber": s,
            "list_name": self.list_name,
            "period_label": period_label(digest),
            "unsubscribe_url": links.unsubscribe,
            "preferences_url": links.preferences,
            "archive_url": links.archive,
            "local_time": local_time,
            "stylesheet": self.stylesheet,
        }
        try:
            subject = clean_header(self._subject.render(ctx))
            ctx["subject"] = subject
            text = self._text.render(ctx)
            html = None
            if s.format == "html":
                html = self._inliner.inline(self._html.render(ctx))
        except jinja2.TemplateError as exc:
            where = getattr(exc, "filename", None) or getattr(exc, "name", None) or "a template"
            line = getattr(exc, "lineno", None)
            raise TemplateError(
                f"{where}{f': line {line}' if line else ''}: {exc}; fix the template"
            ) from None
        return Rendered(subject, text, html)


def period_label(digest: Digest) -> str:
    key = digest.period.key
    if "W" in key:
        year, week = key.split("-W")
        return f"week {int(week)}, {year}"
    return datetime.strptime(key, "%Y-%m-%d").strftime("%A %d %B %Y")


def message_id(subscriber_id: int, period: str, domain: str) -> str:
    """The same for every retry of one (subscriber, period): receivers can drop a duplicate."""
    digest = hashlib.sha256(f"{subscriber_id}:{period}".encode()).hexdigest()[:12]
    return f"<digest.{period}.{subscriber_id}.{digest}@{domain}>"


def build_message(
    rendered: Rendered,
    *,
    sender: str,
    recipient: str,
    msg_id: str,
    list_id: str,
    links: Links,
    date: datetime,
) -> bytes:
    msg = EmailMessage(policy=POLICY)
    msg["From"] = sender
    msg["To"] = recipient
    msg["Subject"] = rendered.subject
    msg["Date"] = email.utils.format_datetime(date)
    msg["Message-ID"] = msg_id
    msg["List-Id"] = list_id
    # RFC 8058: an https URI that takes a POST with List-Unsubscribe=One-Click, plus mailto
    msg["List-Unsubscribe"] = f"<{links.one_click}>, <{links.mailto}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(rendered.text, charset="utf-8")
    if rendered.html is not None:
        msg.add_alternative(rendered.html, subtype="html", charset="utf-8")
    return msg.as_bytes(policy=POLICY)


# -- one message for many subscribers --------------------------------------------------------------
#
# Subscribers who get the same stories in the same format, zone and schedule get the same digest
# but for their address and their signed links. Rendering (Jinja2, css-inline) and MIME assembly
# (the stdlib email package) cost ~5 ms a message, so both are done once per distinct content
# with placeholders, and each subscriber costs a few string replacements and a base64 encoding.
# tests/test_delivery.py checks the result parses exactly as build_message's does.

PLACEHOLDER_EMAIL = "digest-placeholder-address@placeholder.invalid"
PLACEHOLDER_LINKS = Links(
    unsubscribe="https://placeholder.invalid/u/DIGESTPH1",
    one_click="https://placeholder.invalid/u/DIGESTPH1",
    mailto="mailto:placeholder@placeholder.invalid?subject=DIGESTPH2",
    preferences="https://placeholder.invalid/p/DIGESTPH3",
    archive="https://placeholder.invalid/a/DIGESTPH4",
)


@dataclass(frozen=True, slots=True)
class MessageTemplate:
    shared_headers: bytes  # From, Subject, List-Id, ... as the email package encodes them
    text: str
    html: str | None
    boundary: str


def make_template(rendered: Rendered, *, sender: str, list_id: str) -> MessageTemplate:
    import uuid

    head = EmailMessage(policy=POLICY)
    head["From"] = sender
    head["Subject"] = rendered.subject
    head["List-Id"] = list_id
    head["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    head["Auto-Submitted"] = "auto-generated"
    shared = head.as_bytes(policy=POLICY).split(b"\r\n\r\n", 1)[0] + b"\r\n"
    return MessageTemplate(shared, rendered.text, rendered.html, f"=_digest_{uuid.uuid4().hex}")


def _b64(text: str) -> bytes:
    """A text body in canonical MIME form (CRLF line breaks, RFC 2046 §4.1.1), base64-encoded."""
    import base64

    canonical = text.replace("\r\n", "\n").replace("\n", "\r\n")
    if not canonical.endswith("\r\n"):
        canonical += "\r\n"  # as the email package does: a body ends with a line break
    return base64.encodebytes(canonical.encode("utf-8")).replace(b"\n", b"\r\n")


def _substitute(text: str, body_html: str | None, recipient: str, links: Links) -> tuple[str, str | None]:
    """The placeholders replaced by one subscriber's address and links (escaped in the HTML)."""
    import html as html_lib

    pairs = [
        (PLACEHOLDER_LINKS.unsubscribe, links.unsubscribe),
        (PLACEHOLDER_LINKS.mailto, links.mailto),
        (PLACEHOLDER_LINKS.preferences, links.preferences),
        (PLACEHOLDER_LINKS.archive or "", links.archive or ""),
        (PLACEHOLDER_EMAIL, recipient),
    ]
    for old, new in pairs:
        text = text.replace(old, new)
        if body_html is not None:
            body_html = body_html.replace(html_lib.escape(old), html_lib.escape(new))
    return text, body_html


def personalised(rendered: Rendered, recipient: str, links: Links) -> Rendered:
    """A generic rendering made one subscriber's (for preview)."""
    text, body_html = _substitute(rendered.text, rendered.html, recipient, links)
    return Rendered(rendered.subject, text, body_html)


def personalise(
    t: MessageTemplate, *, recipient: str, msg_id: str, links: Links, date: datetime
) -> bytes | None:
    """The message for one subscriber, or None when the fast path cannot be sure (non-ASCII address)."""

    personal = f"{recipient}{msg_id}{links.one_click}{links.mailto}"
    if not personal.isascii() or any(c in personal for c in "\r\n"):
        return None
    text, body_html = _substitute(t.text, t.html, recipient, links)
    lines = [
        f"To: {recipient}",
        f"Date: {email.utils.format_datetime(date)}",
        f"Message-ID: {msg_id}",
        f"List-Unsubscribe: <{links.one_click}>, <{links.mailto}>",
        "MIME-Version: 1.0",
    ]
    head = t.shared_headers + ("\r\n".join(lines) + "\r\n").encode("ascii")
    text_part = b'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
    if body_html is None:
        return head + text_part + _b64(text)
    b = t.boundary.encode("ascii")
    html_part = b'Content-Type: text/html; charset="utf-8"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
    return (
        head
        + b'Content-Type: multipart/alternative; boundary="' + b + b'"\r\n\r\n'
        + b"--" + b + b"\r\n" + text_part + _b64(text)
        + b"--" + b + b"\r\n" + html_part + _b64(body_html)
        + b"--" + b + b"--\r\n"
    )  # fmt: skip


_DOMAIN = re.compile(r"@([^>\s]+)")


def domain_of(address: str) -> str:
    m = _DOMAIN.search(address)
    return m.group(1) if m else "localhost"
