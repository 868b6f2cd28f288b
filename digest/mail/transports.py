"""Deliver messages: one Transport protocol, chosen by `delivery.transport` in feeds.yaml.

The send loop (service.sending) owns the ledger, the rate limit and retries; a transport moves
one message per call and says whether a failure is permanent (5xx: never retry) or temporary
(TemporaryDeliveryError: 4xx, a dropped connection; the loop tries again with back-off).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from digest.config import DeliverySettings, SmtpSettings
from digest.errors import DeliveryError, TemporaryDeliveryError, TransportSetupError
from digest.model.subscribers import mail_address


class Transport(Protocol):
    # Sending the same message twice leaves one copy: its "sent" marks may be committed in batches.
    idempotent: bool

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def send(
        self, sender: str, recipient: str, data: bytes, message_id: str, accepted: Accepted | None = None
    ) -> None:
        """Deliver one message; then, before the connection that took it takes another, await
        `accepted()` (the ledger marks it sent there): a crash or a lost reply can then repeat
        at most the one message each connection has in flight."""
        ...


Accepted = Callable[[], Awaitable[None]]


class OutboxTransport:
    """A Maildir folder of .eml files: the default, so the product works with no mail server.

    A file is written to tmp/ and renamed into new/ under a name derived from its Message-ID,
    so sending the same digest twice leaves one file, and a crash never leaves half a file.
    """

    idempotent = True  # the same Message-ID writes the same file

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def open(self) -> None:
        try:
            for sub in ("tmp", "new", "cur"):
                (self.folder / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DeliveryError(
                f"outbox {self.folder}: cannot create it ({exc.strerror}); fix delivery.outbox"
            ) from None

    async def close(self) -> None:
        return None

    async def send(
        self, sender: str, recipient: str, data: bytes, message_id: str, accepted: Accepted | None = None
    ) -> None:
        await asyncio.to_thread(self._write, data, message_id)
        if accepted is not None:
            await accepted()

    def _write(self, data: bytes, message_id: str) -> None:
        name = hashlib.sha256(message_id.encode()).hexdigest()[:32] + ".eml"
        tmp = self.folder / "tmp" / f"{name}.{os.getpid()}"
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.folder / "new" / name)
        except OSError as exc:
            # a full disk, a quota, a read-only mount: no message can be written, whoever it is
            # for. No half file stays in tmp/; the row stays pending and the next run sends it.
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise TransportSetupError(
                f"outbox {self.folder}: cannot write a message ({exc.strerror or exc}); "
                "free some space there or point delivery.outbox elsewhere"
            ) from None


class _Connection:
    def __init__(self, smtp: object) -> None:
        self.smtp = smtp
        self.sent = 0


class SmtpTransport:
    """aiosmtplib with a small pool of reused connections and a circuit breaker.

    SMTP is sequential per connection, so parallelism comes from several connections (RFC 5321);
    each is renewed after `per_connection` messages. Bytes are sent with sendmail() because
    send_message() re-serialises with the default policy and folds List-Unsubscribe (email.policy).
    """

    idempotent = False  # a re-sent message is a second message: commit each one as it is accepted

    # The circuit breaker: this many failures to connect (refused, no greeting) or timeouts in a
    # row (no message accepted between them) and the server is taken to be down: the run stops sending and
    # leaves the rest pending, instead of trying every subscriber in turn (200 subscribers took
    # 365 s to fail one by one; issue 12).
    BREAKER = 3
    # Connecting and the server's greeting get at most this long (or smtp.timeout if shorter): a
    # server that accepts connections but never greets trips the breaker in seconds, however long
    # smtp.timeout allows a slow DATA reply. RFC 5321 §4.5.3.2 lets a server take 5 minutes
    # to greet; a digest can wait for the next run instead.
    CONNECT_TIMEOUT = 10.0

    def __init__(self, settings: SmtpSettings) -> None:
        self.s = settings
        self._idle: asyncio.Queue[_Connection] = asyncio.Queue()
        self._slots = asyncio.Semaphore(settings.connections)
        self._tls: ssl.SSLContext | None = None  # made once: loading the CA store takes ~30 ms
        self._failures = 0  # connection failures and timeouts in a row
        self.down: TransportSetupError | None = None  # set when the breaker trips

    def _failed(self, why: str) -> None:
        """One more connection failure in a row; the breaker trips at BREAKER."""
        self._failures += 1
        if self._failures >= self.BREAKER and self.down is None:
            s = self.s
            self.down = TransportSetupError(
                f"smtp {s.host}:{s.port}: {self._failures} connections in a row failed (last: {why}); "
                "stopped sending, the rest stays pending for the next run; check that the server is up "
                "and delivery.smtp"
            )

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        while not self._idle.empty():
            await self._quit(self._idle.get_nowait())

    async def _connect(self) -> _Connection:
        import aiosmtplib

        s = self.s
        if self._tls is None and s.security != "none":
            self._tls = ssl.create_default_context(cafile=s.ca_file)
            if not s.verify_tls:
                self._tls.check_hostname = False
                self._tls.verify_mode = ssl.CERT_NONE
        smtp = aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            timeout=s.timeout,
            use_tls=s.security == "tls",
            start_tls=s.security == "starttls",
            tls_context=self._tls,
        )
        try:
            await smtp.connect(timeout=min(s.timeout, self.CONNECT_TIMEOUT))
        except ssl.SSLError as exc:
            raise TransportSetupError(
                f"smtp {s.host}:{s.port}: TLS failed ({exc.reason or exc}); check "
                "delivery.smtp.security, or ca_file for a private CA"
            ) from None
        if s.username:
            try:
                await smtp.login(s.username, s.password or "")
            except aiosmtplib.SMTPAuthenticationError as exc:
                await self._quit(_Connection(smtp))
                raise TransportSetupError(
                    f"smtp {s.host}:{s.port}: login as {s.username!r} refused ({exc.code} "
                    f"{exc.message}); check delivery.smtp.username/password"
                ) from None
            except aiosmtplib.SMTPException as exc:  # the server offers no AUTH (RFC 4954 §3)
                await self._quit(_Connection(smtp))
                raise TransportSetupError(
                    f"smtp {s.host}:{s.port}: the server offers no AUTH ({exc}); use security: starttls "
                    "if it offers AUTH only after STARTTLS, or remove delivery.smtp.username"
                ) from None
        return _Connection(smtp)

    async def _quit(self, conn: _Connection) -> None:
        # the connection is being dropped anyway: a failure to say goodbye changes nothing
        try:
            await conn.smtp.quit()  # type: ignore[attr-defined]
        except Exception:
            with contextlib.suppress(Exception):
                conn.smtp.close()  # type: ignore[attr-defined]

    async def send(
        self, sender: str, recipient: str, data: bytes, message_id: str, accepted: Accepted | None = None
    ) -> None:
        """One attempt: a permanent refusal raises DeliveryError(permanent=True), a 4xx reply or a
        lost connection TemporaryDeliveryError, a server taken to be down TransportSetupError."""
        import aiosmtplib

        s = self.s
        rcpt, envelope_from = mail_address(recipient), mail_address(sender)
        # a non-ASCII local part needs SMTPUTF8 (RFC 6531 §3.4); aiosmtplib refuses to send it
        # to a server that does not offer it (SMTPNotSupported), before MAIL FROM
        options = [] if rcpt.isascii() and envelope_from.isascii() else ["SMTPUTF8"]
        if self.down is not None:
            raise self.down
        async with self._slots:
            if self.down is not None:
                raise self.down
            conn: _Connection | None = None
            try:
                conn = self._idle.get_nowait() if not self._idle.empty() else await self._connect()
                errors, _ = await conn.smtp.sendmail(  # type: ignore[attr-defined]
                    envelope_from, [rcpt], data, mail_options=options
                )
                if errors:  # some servers report a refused recipient here rather than raising
                    code, text = next(iter(errors.values()))
                    raise aiosmtplib.SMTPRecipientRefused(code, text, recipient)
            except aiosmtplib.SMTPNotSupported:
                # this subscriber alone, and not a bounce: the address is fine, the server
                # cannot carry it. Trying the same server again changes nothing.
                self._keep(conn)
                raise DeliveryError(
                    f"{recipient}: not sent: {s.host}:{s.port} does not offer SMTPUTF8 "
                    "(RFC 6531), which an address with a non-ASCII local part needs; use a "
                    "server that does (Postfix: smtputf8_enable = yes), or ask for an ASCII address"
                ) from None
            except aiosmtplib.SMTPRecipientsRefused as exc:
                code, text = exc.recipients[0].code, exc.recipients[0].message
                self._keep(conn)
                if code >= 500:
                    raise DeliveryError(
                        f"{recipient}: refused ({code} {text})", permanent=True, code=code
                    ) from None
                raise TemporaryDeliveryError(f"{recipient}: {code} {text}", code=code) from None
            except aiosmtplib.SMTPResponseException as exc:
                if exc.code >= 500:
                    self._keep(conn)
                    raise DeliveryError(
                        f"{recipient}: refused ({exc.code} {exc.message})", permanent=True, code=exc.code
                    ) from None
                if conn is not None:  # a 4xx such as 421 may close the session: start afresh
                    await self._quit(conn)
                raise TemporaryDeliveryError(
                    f"{recipient}: {exc.code} {exc.message}", code=exc.code
                ) from None
            except _dropped() as exc:
                last = f"connection lost ({exc.__class__.__name__}: {exc})"
                timed_out = isinstance(exc, aiosmtplib.SMTPTimeoutError | TimeoutError)
                if conn is not None:
                    await self._quit(conn)
                # a server that takes no connection, never greets or stops answering is down;
                # one that drops a session it had opened is only tried again
                if conn is None or timed_out:
                    self._failed(last)
                if self.down is not None:
                    raise self.down from None
                raise TemporaryDeliveryError(f"{recipient}: {last}") from None
            self._failures = 0
            conn.sent += 1
            try:
                if accepted is not None:
                    await accepted()  # still holding the connection: nothing else goes on it yet
            except BaseException:
                await self._quit(conn)
                raise
            if conn.sent >= s.per_connection:
                await self._quit(conn)
            else:
                self._idle.put_nowait(conn)

    def _keep(self, conn: _Connection | None) -> None:
        # a refused recipient leaves the session usable (RFC 5321 §4.2: RCPT is answered alone)
        if conn is not None:
            self._idle.put_nowait(conn)


def _dropped() -> tuple[type[BaseException], ...]:
    """Failures that mean the connection is gone, not that the message was refused."""
    import aiosmtplib

    return (
        aiosmtplib.SMTPServerDisconnected,
        aiosmtplib.SMTPConnectError,
        aiosmtplib.SMTPTimeoutError,
        ConnectionError,
        OSError,
        TimeoutError,
    )


class SendmailTransport:
    """A local MTA's sendmail program, one message per invocation (rss2email's default transport).

    The command gets `-f SENDER -- RECIPIENT` appended, like rss2email's sendmail_send (which
    passes `-f address recipient`): the envelope is the one the ledger records, not whatever the
    headers say, which `-t` would use. `-oi` (in the default command) keeps a line holding a lone
    "." from ending the message. The exit status is read as sysexits.h defines it, as sendmail
    itself does (deliver.c): 75 EX_TEMPFAIL, 74 EX_IOERR and 71 EX_OSERR mean try later; 67
    EX_NOUSER, 68 EX_NOHOST and 65 EX_DATAERR mean this message will never go (a bounce); a
    command that cannot run or says it is misused or misconfigured stops the run, blaming nobody.
    """

    idempotent = False  # each invocation queues a new message
    TEMPORARY = frozenset({71, 74, 75})  # EX_OSERR, EX_IOERR, EX_TEMPFAIL
    PERMANENT = frozenset({65, 67, 68})  # EX_DATAERR, EX_NOUSER, EX_NOHOST
    # EX_USAGE, EX_UNAVAILABLE, EX_OSFILE, EX_NOPERM, EX_CONFIG; the shell's not executable, not found
    SETUP = frozenset({64, 69, 72, 77, 78, 126, 127})
    TIMEOUT = 120.0  # a local MTA queues in milliseconds; two minutes means it is stuck

    def __init__(self, command: str) -> None:
        import shlex

        self.command = command
        self.argv = shlex.split(command)

    async def open(self) -> None:
        if not self.argv:
            raise TransportSetupError("delivery.sendmail_command is empty; write e.g. /usr/sbin/sendmail -oi")

    async def close(self) -> None:
        return None

    async def send(
        self, sender: str, recipient: str, data: bytes, message_id: str, accepted: Accepted | None = None
    ) -> None:
        argv = [*self.argv, "-f", mail_address(sender), "--", mail_address(recipient)]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:  # not found, not executable
            raise TransportSetupError(
                f"sendmail: cannot run {self.argv[0]!r} ({exc.strerror or exc}); install a local MTA "
                "or fix delivery.sendmail_command"
            ) from None
        try:
            # a message is a text file: LF line ends, as sendmail(8) reads its standard input
            _, stderr = await asyncio.wait_for(proc.communicate(data.replace(b"\r\n", b"\n")), self.TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise DeliveryError(
                f"{recipient}: {self.argv[0]} took over {self.TIMEOUT:g} s and was stopped; "
                "tried again next run"
            ) from None
        code = proc.returncode
        if code == 0:
            if accepted is not None:  # one message per run: marked sent before the next run starts
                await accepted()
            return
        said = (stderr.decode("utf-8", "replace").strip().splitlines() or ["no message"])[-1][:200]
        if code is not None and code < 0:
            raise DeliveryError(
                f"{recipient}: {self.argv[0]} killed by signal {-code} ({said}); tried again next run"
            )
        if code in self.SETUP:
            raise TransportSetupError(
                f"sendmail: {self.command!r} failed (exit {code}: {said}); "
                "fix delivery.sendmail_command or the MTA"
            )
        if code in self.PERMANENT:
            raise DeliveryError(
                f"{recipient}: refused (sendmail exit {code}: {said})", permanent=True, code=code
            )
        if code in self.TEMPORARY:
            raise TemporaryDeliveryError(f"{recipient}: a temporary failure (sendmail exit {code}: {said})")
        raise DeliveryError(f"{recipient}: not sent (sendmail exit {code}: {said}); tried again next run")


def make_transport(settings: DeliverySettings, base_dir: Path) -> Transport:
    if settings.transport == "smtp":
        return SmtpTransport(settings.smtp)
    if settings.transport == "sendmail":
        return SendmailTransport(settings.sendmail_command)
    return OutboxTransport((base_dir / settings.outbox).resolve())
