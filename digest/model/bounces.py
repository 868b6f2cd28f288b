"""What a message in the bounce mailbox says: pure parsing, the stdlib `email` package only.

    read_report(bytes, bounce_address)
      multipart/report; report-type=delivery-status (RFC 3464)  -> a hard or soft bounce per recipient
      multipart/report; report-type=feedback-report (RFC 5965)  -> a complaint (ARF)
      X-Failed-Recipients (Exim's plain-text bounces)           -> a bounce per address
      anything else (an auto-reply, spam, a person writing)     -> unknown: no effect, moved aside
    and the VERP tokens it carries (bounces+TOKEN@domain in To, Delivered-To, X-Original-To, the
    DSN's X-Postfix-Sender, or the returned message's Return-Path): who it is about, even when
    the report's own recipient fields are missing or mangled.

Who a token names, and what a subscriber's status becomes, are decided elsewhere (tokens.py
checks the signature, storage/bounces.py applies it): this module only reads.
"""

from __future__ import annotations

import email
import email.message
import email.parser
import email.policy
import email.utils
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

BounceKind = Literal["hard", "soft", "complaint"]
# What became of a message in the mailbox: an effect (hard, soft, complaint), a report that
# asks for nothing (a delivery or relay DSN, a DMARC failure report), or not a report at all.
Outcome = Literal["hard", "soft", "complaint", "ignored", "unknown"]
# The strongest effect names a report that carries several (RFC 3464 allows one block per recipient).
STRENGTH: dict[str, int] = {"complaint": 3, "hard": 2, "soft": 1}

# RFC 3463 enhanced status codes: class.subject.detail; class 2 success, 4 transient, 5 permanent.
# Subjects 0-7 are the ones defined, which keeps "Exim 4.96.1" from reading as a status.
_STATUS = re.compile(r"(?<![\d.])([245])\.([0-7])\.(\d{1,3})(?![\d.])")
# An SMTP reply code (RFC 5321 §4.2) at the start of a reply: "550 ..." or "550-..."
_SMTP_REPLY = re.compile(r"(?:^|[\s:;(])([245])\d\d(?=[ -])")
# In free text, a reply code counts only on a line that speaks of a server's reply
_REPLY_LINE = re.compile(r"smtp|said|remote|host|server|error", re.I)
# Feedback types (RFC 5965 §7.3, RFC 6650): abuse and fraud are a person saying "this is spam".
# virus, other, not-spam and auth-failure (a DMARC/SPF report, RFC 6591) are not complaints
# about being mailed, and act on nobody.
COMPLAINT_TYPES = frozenset({"abuse", "fraud"})


@dataclass(frozen=True, slots=True)
class Bounce:
    """One recipient's fate, as one report tells it."""

    kind: BounceKind
    address: str | None  # the recipient the report names (Final-/Original-Recipient, Original-Rcpt-To)
    reason: str  # e.g. "5.1.1 smtp; 550 5.1.1 <ann@example.org>: User unknown", shortened


@dataclass(frozen=True, slots=True)
class Report:
    """One message of the bounce mailbox, read."""

    key: str  # sha256 of its bytes: the ledger key, the same however often it is read
    message_id: str | None  # the report's own Message-ID, for the operator
    bounces: tuple[Bounce, ...]
    verp: tuple[str, ...]  # VERP tokens found, in the order they appear (not yet verified)
    outcome: Outcome  # the strongest bounce's kind, or ignored / unknown
    note: str  # why it was ignored or unknown, or the first bounce's reason


@dataclass(frozen=True, slots=True)
class Effect:
    """What a report does to one subscriber."""

    subscriber_id: int
    kind: BounceKind


def effects(report: Report, owner: int | None, ids: Mapping[str, int]) -> tuple[Effect, ...]:
    """Whom a report acts on, and how. `owner`: the subscriber its VERP token names (verified);
    `ids`: subscriber ids by address. A token wins over the addresses in the report: those may be
    missing, mangled, or a forwarding address the subscriber never gave us. Each subscriber is
    acted on once per report, by its strongest kind."""
    if not report.bounces:
        return ()
    if owner is not None:
        kind = max((b.kind for b in report.bounces), key=STRENGTH.__getitem__)
        return (Effect(owner, kind),)
    strongest: dict[int, BounceKind] = {}
    for b in report.bounces:
        sid = ids.get(b.address) if b.address else None
        if sid is not None and STRENGTH[b.kind] > STRENGTH.get(strongest.get(sid, ""), 0):
            strongest[sid] = b.kind
    return tuple(Effect(sid, kind) for sid, kind in strongest.items())


def classify_status(status: str, action: str = "failed") -> BounceKind | None:
    """An RFC 3464 Action and an RFC 3463 status code -> hard, soft, or None (not a bounce).

    Only a permanent failure that says the address itself is dead makes a bounce hard: 5.1.x
    (bad mailbox or domain), 5.2.1 (mailbox disabled), 5.4.x (no route to the domain) and the
    unspecific 5.0.0. A full mailbox (5.2.2), a message too big (5.3.4, 5.2.3), a policy or spam
    block (5.7.x) and protocol or content trouble (5.5.x, 5.6.x) say little about the address:
    they count as soft, so only a run of them marks the subscriber (a policy block is something
    for the operator to fix, not a reason to drop a reader). A delayed message (Action: delayed)
    and a transient 4.x.x failure are soft; delivered, relayed and expanded are not bounces.
    """
    action = action.strip().lower()
    if action in ("delivered", "relayed", "expanded"):
        return None
    m = _STATUS.search(status or "")
    if action == "delayed":
        return "soft"
    if m is None:
        return "hard" if action == "failed" else None
    klass, subject, detail = m.group(1), int(m.group(2)), int(m.group(3))
    if klass == "2":
        return None
    if klass == "4":
        return "soft"
    if subject in (1, 4) or (subject, detail) in ((2, 1), (0, 0)):
        return "hard"
    return "soft"


def read_report(data: bytes, bounce_address: str | None = None) -> Report:
    """Read one message of the bounce mailbox. Never raises on malformed mail: the email
    package records defects and carries on, and whatever cannot be read is `unknown`."""
    key = hashlib.sha256(data).hexdigest()
    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    message_id = _header(msg, "Message-ID") or None
    verp = _verp_tokens(data, bounce_address)
    content_type = msg.get_content_type()
    report_type = (msg.get_param("report-type") or "") if content_type == "multipart/report" else ""
    report_type = str(report_type).lower()
    bounces: tuple[Bounce, ...] = ()
    note = ""
    if report_type == "feedback-report" or _part(msg, "message/feedback-report") is not None:
        bounces, note = _arf(msg)
    elif report_type == "delivery-status" or _status_part(msg) is not None:
        bounces, note = _dsn(msg)
        if not bounces and not note:
            # the status fields are missing or unreadable: the text part may still quote the
            # status, and a VERP token says whom it is about
            bounces = _from_text(msg)
            if not bounces:
                return Report(key, message_id, (), verp, "unknown", "a delivery report that cannot be read")
    elif msg.get("X-Failed-Recipients"):
        bounces = _exim(msg)
    else:
        return Report(key, message_id, (), verp, "unknown", _why_unknown(msg))
    if not bounces:
        return Report(key, message_id, (), verp, "ignored", note or "reports no failure")
    kind = max((b.kind for b in bounces), key=STRENGTH.__getitem__)
    return Report(key, message_id, bounces, verp, kind, bounces[0].reason)


# -- delivery status notifications (RFC 3464) -------------------------------------------------


def _status_part(msg: email.message.Message) -> email.message.Message | None:
    # message/global-delivery-status: the same fields in UTF-8 (RFC 6533, for SMTPUTF8 mail)
    return _part(msg, "message/delivery-status") or _part(msg, "message/global-delivery-status")


def _dsn(msg: email.message.Message) -> tuple[tuple[Bounce, ...], str]:
    part = _status_part(msg)
    if part is None:
        return (), ""
    blocks = _blocks(part)
    out: list[Bounce] = []
    # blocks[0] holds the per-message fields (Reporting-MTA, Arrival-Date); the rest are one per
    # recipient (RFC 3464 §2.1). A mangled report may lose the first: any block naming a
    # recipient or an action counts.
    for block in blocks:
        action = block.get("action", "")
        status = block.get("status", "")
        recipient = _dsn_address(block.get("final-recipient")) or _dsn_address(
            block.get("original-recipient")
        )
        if not (action or status or recipient):
            continue
        diagnostic = block.get("diagnostic-code", "")
        quoted = _status_in(diagnostic)
        # some MTAs leave Status out, and Exim always writes the unspecific 5.0.0: the remote
        # server's own code, quoted in Diagnostic-Code, says more (a 5.7.1 spam block is no dead address)
        if not status or (status.endswith(".0.0") and quoted[:1] == status[:1] and quoted[1:] != ".0.0"):
            status = quoted or status
        kind = classify_status(status, action or "failed")
        if kind is None:
            continue
        reason = " ".join(x for x in (status, diagnostic) if x) or f"Action: {action or 'failed'}"
        out.append(Bounce(kind, recipient, _short(reason)))
    actions = sorted({b.get("action", "").lower() for b in blocks if b.get("action")})
    if not out and actions:
        return (), f"reports {', '.join(actions)}"
    return tuple(out), ""


def _from_text(msg: email.message.Message) -> tuple[Bounce, ...]:
    """A status code quoted in the report's text, for a report whose fields are lost."""
    status, line = _status_line(_plain_text(msg), free_text=True)
    kind = classify_status(status) if status else None
    if kind is None:
        return ()
    return (Bounce(kind, None, _short(line)),)


def _blocks(part: email.message.Message) -> list[dict[str, str]]:
    """The field blocks of a delivery-status part, names lower-cased, values unfolded."""
    payload = part.get_payload()
    if isinstance(payload, list):  # message/delivery-status: the email package splits the blocks
        return [_fields(b) for b in payload if isinstance(b, email.message.Message)]
    raw = part.get_payload(decode=True)
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(payload or "")
    parser = email.parser.HeaderParser(policy=email.policy.compat32)
    return [_fields(parser.parsestr(block)) for block in re.split(r"\r?\n\s*\r?\n", text) if block.strip()]


def _fields(m: email.message.Message) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in m.items():
        out.setdefault(name.lower(), _unfold(value))
    return out


def _dsn_address(value: str | None) -> str | None:
    """`rfc822; ann@example.org` (address-type; address, RFC 3464 §2.3.2) -> the address."""
    if not value:
        return None
    kind, sep, rest = value.partition(";")
    address = rest if sep else kind
    if sep and kind.strip().lower() not in ("rfc822", "utf-8"):
        return None  # an X.400 or other address type: not an e-mail address
    return _bare(address)


def _status_in(text: str, *, free_text: bool = False) -> str:
    """The first enhanced status code in `text`, else the class of its first SMTP reply code
    ("550 ..." -> 5.0.0); in free text, only a reply on a line about a server's answer."""
    return _status_line(text, free_text=free_text)[0]


def _status_line(text: str, *, free_text: bool = False) -> tuple[str, str]:
    """_status_in, and the line it was read from."""
    lines = text.splitlines() or [text]
    for line in lines:
        m = _STATUS.search(line)
        if m:
            return m.group(0), line.strip()
    for line in lines:
        if free_text and not _REPLY_LINE.search(line):
            continue
        reply = _SMTP_REPLY.search(line)
        if reply:
            return f"{reply.group(1)}.0.0", line.strip()
    return "", ""


# -- Exim's plain-text bounces -----------------------------------------------------------------


def _exim(msg: email.message.Message) -> tuple[Bounce, ...]:
    """Exim names the failed addresses in X-Failed-Recipients and adds it to bounces only (its
    spec, "Bounce and warning messages"); the status, when it quotes one, is in the text."""
    quoted = _from_text(msg)
    kind: BounceKind = quoted[0].kind if quoted else "hard"  # "This is a permanent error"
    reason = quoted[0].reason if quoted else "X-Failed-Recipients"
    addresses = [a for _, a in email.utils.getaddresses(msg.get_all("X-Failed-Recipients", [])) if a]
    return tuple(Bounce(kind, _bare(a), reason) for a in addresses)


# -- complaints: the Abuse Reporting Format (RFC 5965) -------------------------------------------


def _arf(msg: email.message.Message) -> tuple[tuple[Bounce, ...], str]:
    part = _part(msg, "message/feedback-report")
    if part is None:
        return (), "a feedback report without its message/feedback-report part"
    fields = _report_fields(part)
    feedback = fields.get("feedback-type", "").strip().lower()
    if feedback not in COMPLAINT_TYPES:
        return (), f"feedback type {feedback or 'missing'!r}, not a complaint"
    # Original-Rcpt-To is optional and often redacted; the returned message's To is the next
    # best (the VERP token in its Return-Path is better still, and is read by the caller)
    address = _bare(fields.get("original-rcpt-to", "")) or _bare(_returned_header(msg, "To") or "")
    agent = fields.get("user-agent", "")
    reason = f"feedback-type {feedback}" + (f" from {agent}" if agent else "")
    return (Bounce("complaint", address, _short(reason)),), ""


def _report_fields(part: email.message.Message) -> dict[str, str]:
    payload = part.get_payload()
    if isinstance(payload, list):
        return _fields(payload[0]) if payload and isinstance(payload[0], email.message.Message) else {}
    raw = part.get_payload(decode=True)
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(payload or "")
    return _fields(email.parser.HeaderParser(policy=email.policy.compat32).parsestr(text.lstrip()))


# -- VERP -------------------------------------------------------------------------------------


def verp_address(bounce_address: str, token: str) -> str:
    """`bounces@example.org` + a token -> `bounces+TOKEN@example.org` (the VERP convention of
    qmail and Postfix: recipient_delimiter = + delivers it to the `bounces` mailbox)."""
    local, _, domain = bounce_address.rpartition("@")
    return f"{local}+{token}@{domain}"


def verp_token(address: str, bounce_address: str) -> str | None:
    """The token of `bounces+TOKEN@example.org`, if the address is one of ours. Local parts are
    compared without case: some servers on the way fold them (RFC 5321 §2.4 warns of it)."""
    local, _, domain = _bare(address).rpartition("@")
    base_local, _, base_domain = bounce_address.rpartition("@")
    if domain.lower() != base_domain.lower():
        return None
    prefix, plus, token = local.partition("+")
    if not plus or prefix.lower() != base_local.lower() or not token:
        return None
    return token.lower()


def _verp_tokens(data: bytes, bounce_address: str | None) -> tuple[str, ...]:
    """Every token of our VERP addresses in the message, in order: in To, Delivered-To,
    X-Original-To, a DSN's X-Postfix-Sender, the returned message's Return-Path, or quoted in a
    report's text. Searched in the raw bytes, not header by header: that also finds the address
    where a mangled report has put it, and any token still has to carry our signature
    (tokens.py) before it names anyone."""
    if not bounce_address:
        return ()
    local, _, domain = bounce_address.rpartition("@")
    pattern = _VERP_PATTERNS.get(bounce_address)
    if pattern is None:
        pattern = _VERP_PATTERNS[bounce_address] = re.compile(
            rb"(?<![\w.+-])"
            + re.escape(local.encode())
            + rb"\+([A-Za-z0-9][A-Za-z0-9._=-]*)@"
            + re.escape(domain.encode())
            + rb"(?![\w-]|\.[\w-])",
            re.I,
        )
    seen: list[str] = []
    for m in pattern.finditer(data):
        token = m.group(1).decode("ascii").lower()
        if token not in seen:
            seen.append(token)
    return tuple(seen)


_VERP_PATTERNS: dict[str, re.Pattern[bytes]] = {}


# -- helpers ----------------------------------------------------------------------------------


def _part(msg: email.message.Message, content_type: str) -> email.message.Message | None:
    for part in _parts(msg):
        if part.get_content_type() == content_type:
            return part
    return None


def _parts(msg: email.message.Message) -> list[email.message.Message]:
    """The MIME parts, not descending into delivery-status field blocks (which the email package
    holds as messages) nor into a returned message (whose own parts are not the report's)."""
    out = [msg]
    payload = msg.get_payload()
    if msg.is_multipart() and msg.get_content_maintype() == "multipart" and isinstance(payload, list):
        for sub in payload:
            if isinstance(sub, email.message.Message):
                out += _parts(sub)
    return out


def _returned_header(msg: email.message.Message, name: str) -> str | None:
    """A header of the returned message (message/rfc822, text/rfc822-headers: RFC 3462 §3)."""
    for part in _parts(msg):
        ctype = part.get_content_type()
        if ctype in ("message/rfc822", "message/global"):
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], email.message.Message):
                value = inner[0].get(name)
                return _bare(_unfold(value)) if value else None
        if ctype in ("text/rfc822-headers", "message/global-headers"):
            raw = part.get_payload(decode=True)
            text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(part.get_payload())
            value = email.parser.HeaderParser(policy=email.policy.compat32).parsestr(text.lstrip()).get(name)
            return _bare(_unfold(value)) if value else None
    return None


def _plain_text(msg: email.message.Message) -> str:
    for part in _parts(msg):
        if part.get_content_type() == "text/plain":
            raw = part.get_payload(decode=True)
            if isinstance(raw, bytes):
                return raw.decode(part.get_content_charset() or "utf-8", "replace")
    return ""


def _why_unknown(msg: email.message.Message) -> str:
    subject = _unfold(_header(msg, "Subject"))[:80]
    sender = _unfold(_header(msg, "From"))[:80]
    return f"not a delivery report or complaint (from {sender or '?'}: {subject or 'no subject'})"


def _header(msg: email.message.Message, name: str) -> str:
    value = msg.get(name)
    return str(value) if value is not None else ""


def _unfold(value: object) -> str:
    return " ".join(str(value or "").split())


_PLAIN_ADDRESS = re.compile(r"<?([^\s<>@\"(),;:]+@[^\s<>@\"(),;:]+)>?")


def _bare(address: str) -> str:
    """`<Ann@Example.org>` or `Ann <ann@example.org>` -> the address, its domain lower-cased."""
    text = _unfold(address)
    plain = _PLAIN_ADDRESS.fullmatch(text)  # the usual case, without the full RFC 5322 parser
    addr = plain.group(1) if plain else (email.utils.parseaddr(text)[1] or text.strip("<> "))
    local, at, domain = addr.rpartition("@")
    return f"{local}@{domain.lower()}" if at and local else ""


def _short(text: str, limit: int = 200) -> str:
    text = _unfold(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"
