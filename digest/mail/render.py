"""Render a Digest into an e-mail: Jinja2 templates, CSS inlined, headers that cannot be injected.

Templates come from `delivery.templates` (default: `templates/` beside feeds.yaml, if present),
then from the defaults inside the package. HTML templates are autoescaped and feed text is never
marked safe (only our own stylesheets are); the subject is built from our own template, one line,
control characters removed. Messages are serialised with max_line_length=998 so that
List-Unsubscribe is never folded into encoded-words (cpython #85725).

    Digest | words (locales: the chrome's language) | templates (feed text cleaned: bidi controls
    and mark runs dropped, isolated by dir=auto/<bdi>) | css-inline | over HTML_LIMIT? fewer
    stories, "N more in the archive" | MIME

The web copy ("View in browser") is the same template with the stylesheets linked from /static/
instead of inlined: the archive's Content-Security-Policy allows no inline style.
"""

from __future__ import annotations

import binascii
import dataclasses
import email.policy
import email.utils
import hashlib
import html as html_lib
import re
import unicodedata
from dataclasses import dataclass, replace
from datetime import datetime
from email.message import EmailMessage
from importlib import resources
from pathlib import Path
from zoneinfo import ZoneInfo

import jinja2
from markupsafe import Markup

from digest.errors import TemplateError
from digest.model.assemble import Digest, DigestStory
from digest.model.links import safe_href
from digest.model.locales import Words, words_for

POLICY = email.policy.SMTP.clone(max_line_length=998)
SUBJECT_MAX = 150
# Gmail clips an HTML part over about 102 KB behind "View entire message", footer and unsubscribe
# link included (spamresource.com, "What is Gmail clipping", 2022). A digest's HTML is kept under
# HTML_LIMIT bytes; HTML_MARGIN is left for personalising (real links and the address are longer
# than the placeholders rendered with).
HTML_LIMIT = 100_000
HTML_MARGIN = 3_000

# Feed text that would disturb the page around it. Bidirectional embeddings, overrides and
# isolates (U+202A-U+202E, U+2066-U+2069) and marks (U+200E, U+200F, U+061C) reorder the text
# that follows them: a U+202E in a title reversed the date line (Unicode TR#9 §2). They are
# dropped, and feed text sits in dir="auto" blocks or <bdi> instead, which isolate it properly.
_BIDI = dict.fromkeys(map(ord, "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"))
# Combining marks stack without limit ("Zalgo" text drew through twenty cards). Real scripts put
# a few on one letter (Vietnamese two, Indic and Hebrew vowel points three or four).
MAX_MARKS = 4
_CSS_COMMENT = re.compile(r"/\*.*?\*/\s*", re.S)


def default_template_dir() -> Path:
    packaged = resources.files("digest").joinpath("_defaults", "templates")
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "templates"


@dataclass(frozen=True, slots=True)
class Links:
    unsubscribe: str  # https, signed: opens a page with one button; also the RFC 8058 POST target
    mailto: str
    preferences: str
    archive: str | None = None


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    text: str
    html: str | None


def clean_text(value: str) -> str:
    """Feed text fit for a page: bidi controls dropped, combining-mark runs cut to MAX_MARKS."""
    value = unicodedata.normalize("NFC", value.translate(_BIDI))
    if value.isascii():
        return value
    out: list[str] = []
    run = 0
    for c in value:
        if unicodedata.category(c) in ("Mn", "Me"):
            run += 1
            if run > MAX_MARKS:
                continue
        else:
            run = 0
        out.append(c)
    return "".join(out)


def _key(text: str) -> str:
    return "".join(c for c in text.casefold() if c.isalnum())


def fresh_summary(story: DigestStory) -> str:
    """The summary, unless it only repeats the headline (many feeds send the title twice, or the
    title plus a few words); a summary that opens with the headline loses it."""
    title, summary = clean_text(story.title), clean_text(story.summary)
    t, s = _key(title), _key(summary)
    if not s or s in t:
        return ""
    if s.startswith(t):
        if len(s) - len(t) < 24:
            return ""
        if summary.casefold().startswith(title.casefold()):
            rest = summary[len(title) :].lstrip(" .,:;|-–—·").strip()
            return "" if _key(rest) in t else rest  # the headline twice over
    return summary


def _shortened(digest: Digest, keep: int) -> Digest:
    """The digest's first `keep` stories, in the order they are shown."""
    sections = []
    for section in digest.sections:
        if keep <= 0:
            break
        stories = section.stories[:keep]
        keep -= len(stories)
        sections.append(replace(section, stories=stories))
    return replace(digest, sections=tuple(sections))


def clean_header(value: str, limit: int = SUBJECT_MAX) -> str:
    """One line: control and format characters dropped, whitespace collapsed, capped."""
    value = "".join(" " if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c for c in value)
    value = " ".join(value.split())
    return value if len(value) <= limit else value[: limit - 1].rstrip() + "…"


def _safe_story(story: DigestStory) -> DigestStory:
    also = tuple((outlet, safe_href(link)) for outlet, link in story.also)
    return replace(story, link=safe_href(story.link), also=also)


def safe_links(digest: Digest) -> Digest:
    """The digest with every story link that is not http(s) or mailto removed (titles kept)."""
    sections = tuple(
        replace(sec, stories=tuple(_safe_story(st) for st in sec.stories)) for sec in digest.sections
    )
    return replace(digest, sections=sections)


class Renderer:
    def __init__(self, template_dir: Path | None = None, *, list_name: str, locale: str = "auto") -> None:
        dirs = [str(d) for d in (template_dir, default_template_dir()) if d is not None and d.is_dir()]
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(dirs),
            autoescape=jinja2.select_autoescape(enabled_extensions=("html", "html.j2"), default=False),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.list_name = list_name
        self.locale = locale
        self.env.filters["clean"] = clean_text
        try:
            # The operator's own CSS, never feed text, so Markup: autoescaped, its quotes became
            # &#34; and the font stack was lost in every digest (issue 13). _css escapes "</".
            self.stylesheet = Markup(self._css("style.css"))  # noqa: S704
            self.head_stylesheet = Markup(self._css("style-head.css"))  # noqa: S704
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

        # never fetch remote stylesheets. style.css is inlined and dropped; style-head.css is
        # inlined and kept as written (data-css-inline="keep"): keep_at_rules would copy its
        # @media rules a second time into every mail.
        self._inliner = css_inline.CSSInliner(load_remote_stylesheets=False, keep_at_rules=False)

    def _css(self, name: str) -> str:
        css = self.env.loader.get_source(self.env, name)[0]  # type: ignore[union-attr]
        css = _CSS_COMMENT.sub("", css)  # every mail carries the stylesheet: no comments
        return css.replace("</", "<\\/")

    def render(self, digest: Digest, links: Links, *, web: bool = False) -> Rendered:
        """Subject, text and (for HTML subscribers) HTML. web=True: the page for "View in browser",
        stylesheets linked, never shortened."""
        digest = safe_links(digest)  # the mail, the preview and the archive page all pass here
        s = digest.subscriber
        zone = ZoneInfo(s.timezone)
        words = words_for(self.locale, (st.title for sec in digest.sections for st in sec.stories))

        def local_time(t: datetime) -> str:
            return words.when(t.astimezone(zone))

        ctx = {
            "digest": digest,
            "subscriber": s,
            "list_name": self.list_name,
            "period_label": period_label(digest, words),
            "unsubscribe_url": links.unsubscribe,
            "preferences_url": links.preferences,
            "archive_url": links.archive,
            "local_time": local_time,
            "fresh_summary": fresh_summary,
            "words": words,
            "web": web,
            "clipped": 0,
            "stylesheet": self.stylesheet,
            "head_stylesheet": self.head_stylesheet,
        }
        try:
            subject = clean_header(self._subject.render(ctx))
            ctx["subject"] = subject
            ctx["preheader"] = preheader(digest, words)
            text = self._text.render(ctx)
            html = None
            if s.format == "html" or web:
                html = self._html.render(ctx) if web else self._fitted_html(digest, ctx)
        except jinja2.TemplateError as exc:
            where = getattr(exc, "filename", None) or getattr(exc, "name", None) or "a template"
            line = getattr(exc, "lineno", None)
            raise TemplateError(
                f"{where}{f': line {line}' if line else ''}: {exc}; fix the template"
            ) from None
        return Rendered(subject, text, html)

    def _fitted_html(self, digest: Digest, ctx: dict[str, object]) -> str:
        """The inlined HTML, with as many stories as fit under HTML_LIMIT (the rest: "N more in
        the archive"; the archive copy shows them all)."""
        html = self._inliner.inline(self._html.render(ctx))
        budget = HTML_LIMIT - HTML_MARGIN
        if len(html.encode("utf-8")) <= budget:
            return html
        total = digest.count
        lo, hi = 0, total - 1  # the most stories that fit lies in [lo, hi]
        best = None
        while lo <= hi:
            keep = (lo + hi) // 2
            page = self._inliner.inline(
                self._html.render({**ctx, "digest": _shortened(digest, keep), "clipped": total - keep})
            )
            if len(page.encode("utf-8")) <= budget:
                best, lo = page, keep + 1
            else:
                hi = keep - 1
        if best is None:
            raise TemplateError(
                f"digest.html.j2: even with no story the HTML is over {budget} bytes; shorten the template"
            )
        return best


def preheader(digest: Digest, words: Words) -> str:
    """The line inboxes show after the subject: the first headlines (else the mail's first words)."""
    heads = [clean_text(st.title) for sec in digest.sections for st in sec.stories][:3]
    text = " · ".join(heads) or words.text("empty")
    return clean_header(text, 140)


def period_label(digest: Digest, words: Words | None = None) -> str:
    words = words or Words("en")
    key = digest.period.key
    if digest.subscriber.cadence == "instant":  # a window's start, in the reader's own time
        return words.when(digest.period.due.astimezone(ZoneInfo(digest.subscriber.timezone)))
    if "W" in key:
        year, week = key.split("-W")
        return words.week(int(year), int(week))
    return words.day(datetime.strptime(key, "%Y-%m-%d").date())


def message_id(subscriber_id: int, period: str, domain: str) -> str:
    """The same for every retry of one (subscriber, period): receivers can drop a duplicate."""
    digest = hashlib.sha256(f"{subscriber_id}:{period}".encode()).hexdigest()[:12]
    return f"<digest.{period}.{subscriber_id}.{digest}@{domain}>"


# -- MIME: one builder -----------------------------------------------------------------------------
#
# Every message (a digest, a confirmation, the operator's report) is built here, in two steps:
# `make_template` once per distinct content (the headers shared by every copy, encoded and folded
# by the email package's SMTP policy, and the rendered bodies with placeholders for the
# subscriber's address and links), then `build_message` per subscriber: the personal headers and
# the bodies, base64, in a multipart/alternative (RFC 2046 §5.1.4) or a single text/plain part.
# Rendering and the email package cost ~5 ms a message; one subscriber's copy costs a few string
# replacements and a base64 encoding (tests/mail/test_render.py parses the result with the email package).

PLACEHOLDER_EMAIL = "digest-placeholder-address@placeholder.invalid"
PLACEHOLDER_LINKS = Links(
    unsubscribe="https://placeholder.invalid/u/DIGESTPH1",
    mailto="mailto:placeholder@placeholder.invalid?subject=DIGESTPH2",
    preferences="https://placeholder.invalid/p/DIGESTPH3",
    archive="https://placeholder.invalid/a/DIGESTPH4",
)
NO_LINKS = Links(unsubscribe="", mailto="", preferences="")  # a mail that is not a digest


@dataclass(frozen=True, slots=True)
class MessageTemplate:
    shared_headers: bytes  # From, Subject, List-Id, ... as the email package encodes them
    text: str
    html: str | None
    boundary: str
    list_mail: bool = True  # a digest: List-Unsubscribe with the subscriber's own links


def make_template(rendered: Rendered, *, sender: str, list_id: str | None) -> MessageTemplate:
    """The part of a message every subscriber's copy shares. `list_id` None: not a list mail
    (a confirmation, the operator's report): no List-* headers."""
    import uuid

    head = EmailMessage(policy=POLICY)
    head["From"] = sender
    head["Subject"] = rendered.subject
    if list_id is not None:
        head["List-Id"] = list_id
        # RFC 8058: an https URI that takes a POST with List-Unsubscribe=One-Click (the personal
        # List-Unsubscribe header holds it, and a mailto)
        head["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    head["Auto-Submitted"] = "auto-generated"  # RFC 3834 §5: no auto-replies, please
    shared = head.as_bytes(policy=POLICY).split(b"\r\n\r\n", 1)[0] + b"\r\n"
    boundary = f"=_digest_{uuid.uuid4().hex}"  # never in base64 text (RFC 2046 §5.1.1)
    return MessageTemplate(shared, rendered.text, rendered.html, boundary, list_id is not None)


def _b64(text: str) -> bytes:
    """A text body in canonical MIME form (CRLF line breaks, RFC 2046 §4.1.1), base64-encoded
    (RFC 2045 §6.8: lines of 76 characters)."""
    canonical = text.replace("\r\n", "\n").replace("\n", "\r\n")
    if not canonical.endswith("\r\n"):
        canonical += "\r\n"  # as the email package does: a body ends with a line break
    # one C call for the whole body, then the lines cut (base64.encodebytes makes one call per
    # 57-byte line: a third of a digest's cost to build)
    encoded = binascii.b2a_base64(canonical.encode("utf-8"), newline=False)
    return b"\r\n".join([encoded[i : i + 76] for i in range(0, len(encoded), 76)]) + b"\r\n"


# Every placeholder, found in one pass over a body. None holds a character HTML escapes, so the
# same pattern finds them in the HTML part.
_PLACEHOLDERS = re.compile(
    "|".join(
        re.escape(p) for p in (*(x for x in dataclasses.astuple(PLACEHOLDER_LINKS) if x), PLACEHOLDER_EMAIL)
    )
)


def _substitute(text: str, body_html: str | None, recipient: str, links: Links) -> tuple[str, str | None]:
    """The placeholders replaced by one subscriber's address and links (escaped in the HTML)."""
    values = {
        PLACEHOLDER_LINKS.unsubscribe: links.unsubscribe,
        PLACEHOLDER_LINKS.mailto: links.mailto,
        PLACEHOLDER_LINKS.preferences: links.preferences,
        PLACEHOLDER_LINKS.archive or "": links.archive or "",
        PLACEHOLDER_EMAIL: recipient,
    }
    text = _PLACEHOLDERS.sub(lambda m: values[m.group()], text)
    if body_html is not None:
        escaped = {k: html_lib.escape(v) for k, v in values.items()}
        body_html = _PLACEHOLDERS.sub(lambda m: escaped[m.group()], body_html)
    return text, body_html


def fill_placeholders(rendered: Rendered, recipient: str, links: Links) -> Rendered:
    """A rendering made with the placeholders, made one subscriber's (for preview)."""
    text, body_html = _substitute(rendered.text, rendered.html, recipient, links)
    return Rendered(rendered.subject, text, body_html)


_TEXT_PART = b'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
_HTML_PART = b'Content-Type: text/html; charset="utf-8"\r\nContent-Transfer-Encoding: base64\r\n\r\n'


def build_message(
    t: MessageTemplate, *, recipient: str, msg_id: str, date: datetime, links: Links = NO_LINKS
) -> bytes:
    """One subscriber's copy of a template: RFC 5322 bytes with CRLF line ends.

    The To header carries the address as it goes on the wire (subscribers.mail_address: IDNA
    domain); a non-ASCII local part stays UTF-8 in the header (RFC 6532 §3.2), since an
    encoded-word is not allowed in an addr-spec (RFC 2047 §5); such a message needs an SMTPUTF8
    server anyway (RFC 6531)."""
    from digest.model.subscribers import mail_address

    to = mail_address(recipient)
    personal = f"{to}{msg_id}{links.unsubscribe}{links.mailto}"
    if any(c in personal for c in "\r\n"):  # addresses and links are ours: this is a bug, not input
        raise ValueError(f"a line break in the headers of the message to {recipient!r}")
    lines = [f"To: {to}", f"Date: {email.utils.format_datetime(date)}", f"Message-ID: {msg_id}"]
    if t.list_mail:
        lines.append(f"List-Unsubscribe: <{links.unsubscribe}>, <{links.mailto}>")
    lines.append("MIME-Version: 1.0")
    head = t.shared_headers + ("\r\n".join(lines) + "\r\n").encode("utf-8")
    text, body_html = _substitute(t.text, t.html, recipient, links)
    if body_html is None:
        return head + _TEXT_PART + _b64(text)
    b = t.boundary.encode("ascii")
    return (
        head
        + b'Content-Type: multipart/alternative; boundary="' + b + b'"\r\n\r\n'
        + b"--" + b + b"\r\n" + _TEXT_PART + _b64(text)
        + b"--" + b + b"\r\n" + _HTML_PART + _b64(body_html)
        + b"--" + b + b"--\r\n"
    )  # fmt: skip


def plain_message(
    *, sender: str, recipient: str, subject: str, text: str, msg_id: str, date: datetime
) -> bytes:
    """A short text mail (a confirmation, the operator report) with the headers every mail needs:
    Date is required and Message-ID expected (RFC 5322 §3.6); spam filters score their absence."""
    template = make_template(Rendered(subject, text, None), sender=sender, list_id=None)
    return build_message(template, recipient=recipient, msg_id=msg_id, date=date)


_DOMAIN = re.compile(r"@([^>\s]+)")


def domain_of(address: str) -> str:
    m = _DOMAIN.search(address)
    return m.group(1) if m else "localhost"
