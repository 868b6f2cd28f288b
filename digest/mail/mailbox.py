"""The bounce mailbox: a Maildir the MTA delivers to, or a folder on an IMAP server over TLS.

One protocol, as for transports: list the messages waiting, hand over their bytes, and move each
aside once the caller has committed what it did with it (never before: a reader killed in
between reads the message again, and the ledger makes that harmless).

    Maildir: new/ and cur/ are read; a message is renamed into the Maildir++ subfolder
             .processed/cur or .unknown/cur (rename(2) within one file system is atomic).
    IMAP:    the folder's messages are fetched with BODY.PEEK[] (not marked \\Seen), then moved
             with UID MOVE (RFC 6851), or UID COPY + \\Deleted + expunge where MOVE is missing.
"""

from __future__ import annotations

import contextlib
import imaplib
import mailbox
import os
import re
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from digest.config import BounceSettings, ImapSettings
from digest.errors import ConfigError, MailboxError

Destination = Literal["processed", "unknown"]


@dataclass(frozen=True, slots=True)
class Incoming:
    ref: str  # Maildir: the file's path; IMAP: the UID
    data: bytes


class BounceSource(Protocol):
    name: str

    def open(self) -> None: ...

    def messages(self) -> Iterator[Incoming]: ...

    def move(self, item: Incoming, to: Destination) -> None: ...

    def close(self) -> None: ...


class MaildirSource:
    """A Maildir (cr.yp.to/proto/maildir.html). The subfolders are Maildir++ ones, made with the
    stdlib's mailbox.Maildir.add_folder, so Dovecot or Courier show them as folders."""

    name = "maildir"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.folders: dict[str, Path] = {}

    def open(self) -> None:
        missing = [d for d in ("new", "cur", "tmp") if not (self.root / d).is_dir()]
        if missing:
            raise MailboxError(
                f"bounces.maildir: {self.root} is not a Maildir (no {', '.join(missing)}/); point it at "
                "the mailbox your MTA delivers bounces to"
            )
        try:
            box = mailbox.Maildir(self.root, factory=None, create=False)
            for dest in ("processed", "unknown"):
                folder = self.root / f".{dest}"
                if dest not in box.list_folders():
                    # two readers starting at once (the daemon and `digest bounces`) both make it:
                    # the second finds it there, perhaps half made, and completes it
                    with contextlib.suppress(FileExistsError):
                        box.add_folder(dest)
                for sub in ("cur", "new", "tmp"):
                    (folder / sub).mkdir(parents=True, exist_ok=True)
                self.folders[dest] = folder
        except OSError as exc:
            raise MailboxError(
                f"bounces.maildir: cannot create the .processed and .unknown folders in {self.root} "
                f"({exc.strerror or exc}); let digest write there"
            ) from None

    def messages(self) -> Iterator[Incoming]:
        for sub in ("new", "cur"):
            try:
                names = sorted(n for n in os.listdir(self.root / sub) if not n.startswith("."))
            except OSError as exc:
                raise MailboxError(
                    f"bounces.maildir: cannot list {self.root / sub} ({exc.strerror})"
                ) from None
            for name in names:
                path = self.root / sub / name
                try:
                    data = path.read_bytes()
                except FileNotFoundError:  # another reader moved it meanwhile
                    continue
                except OSError as exc:
                    raise MailboxError(f"bounces.maildir: cannot read {path} ({exc.strerror})") from None
                yield Incoming(str(path), data)

    def move(self, item: Incoming, to: Destination) -> None:
        src = Path(item.ref)
        # a message in cur/ keeps its flags; one from new/ gets "2,S" (seen: it has been read)
        name = src.name if ":2," in src.name else f"{src.name.split(':')[0]}:2,S"
        try:
            os.rename(src, self.folders[to] / "cur" / name)
        except FileNotFoundError:
            return  # moved by another reader of the same Maildir: its ledger row is there too
        except OSError as exc:
            raise MailboxError(
                f"bounces.maildir: cannot move {src} to .{to} ({exc.strerror}); it is read again next "
                "time (the ledger keeps it from counting twice)"
            ) from None

    def close(self) -> None:
        return None


_FETCHED_UID = re.compile(rb"UID (\d+)")


class ImapSource:
    """imaplib.IMAP4_SSL: TLS from the first byte (port 993, RFC 8314), the password from the
    environment variable the config names."""

    name = "imap"
    FETCH_AT_ONCE = 50

    def __init__(self, settings: ImapSettings, base_dir: Path) -> None:
        self.s = settings
        self.base_dir = base_dir
        self.imap: imaplib.IMAP4_SSL | None = None
        self.can_move = False
        self.deleted = False

    def _where(self) -> str:
        return f"bounces.imap {self.s.host}:{self.s.port}"

    def open(self) -> None:
        s = self.s
        password = os.environ.get(s.password_env)
        if not password:
            raise ConfigError(
                f"bounces.imap.password_env: the environment variable {s.password_env} is not set; "
                "export the bounce mailbox's password in it"
            )
        ca = str(self.base_dir / s.ca_file) if s.ca_file else None
        context = ssl.create_default_context(cafile=ca)
        if not s.verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        try:
            self.imap = imaplib.IMAP4_SSL(s.host, s.port, ssl_context=context, timeout=s.timeout)
        except ssl.SSLError as exc:
            raise MailboxError(
                f"{self._where()}: TLS failed ({exc.reason or exc}); check the port (993) and "
                "bounces.imap.ca_file for a private CA"
            ) from None
        except OSError as exc:
            raise MailboxError(
                f"{self._where()}: cannot connect ({exc.strerror or exc}); check bounces.imap.host and port"
            ) from None
        try:
            self.imap.login(s.username, password)
        except imaplib.IMAP4.error as exc:
            self.close()
            raise MailboxError(
                f"{self._where()}: login as {s.username!r} refused ({_said(exc)}); check "
                f"bounces.imap.username and the password in {s.password_env}"
            ) from None
        self.can_move = "MOVE" in self.imap.capabilities
        for folder in (s.processed_folder, s.unknown_folder):
            # CREATE answers NO when the folder exists already (RFC 3501 §6.3.3), and when it
            # cannot be made (a name the server refuses): LIST tells the two apart
            said = self._cmd(f"create {folder}", self.imap.create, _quote(folder), allow_no=True)
            if not [x for x in self._cmd(f"list {folder}", self.imap.list, '""', _quote(folder)) if x]:
                refusal = b" ".join(x for x in said if isinstance(x, bytes)).decode("utf-8", "replace")
                raise MailboxError(
                    f"{self._where()}: cannot create the folder {folder!r} ({refusal}); name another in "
                    "bounces.imap.processed_folder / unknown_folder"
                )
        self._cmd(f"select {s.folder}", self.imap.select, _quote(s.folder))

    def messages(self) -> Iterator[Incoming]:
        imap = self._open()
        # UNDELETED: a message copied and flagged by a reader that died before its EXPUNGE is
        # in the processed folder already (and in the ledger)
        uids = (self._cmd("search", imap.uid, "SEARCH", "UNDELETED")[0] or b"").split()
        for i in range(0, len(uids), self.FETCH_AT_ONCE):
            chunk = b",".join(uids[i : i + self.FETCH_AT_ONCE]).decode()
            for part in self._cmd("fetch", imap.uid, "FETCH", chunk, "(UID BODY.PEEK[])"):
                if isinstance(part, tuple) and len(part) == 2:
                    m = _FETCHED_UID.search(part[0])
                    if m:
                        yield Incoming(m.group(1).decode(), part[1])

    def move(self, item: Incoming, to: Destination) -> None:
        imap = self._open()
        folder = _quote(self.s.processed_folder if to == "processed" else self.s.unknown_folder)
        if self.can_move:
            self._cmd(f"move UID {item.ref}", imap.uid, "MOVE", item.ref, folder)
            return
        self._cmd(f"copy UID {item.ref}", imap.uid, "COPY", item.ref, folder)
        self._cmd(f"flag UID {item.ref}", imap.uid, "STORE", item.ref, "+FLAGS.SILENT", r"(\Deleted)")
        self.deleted = True

    def close(self) -> None:
        imap, self.imap = self.imap, None
        if imap is None:
            return
        # the connection is being dropped anyway: a failure to say goodbye changes nothing
        with contextlib.suppress(imaplib.IMAP4.error, OSError):
            if self.deleted:
                imap.expunge()  # the copies are in place: the originals go
            imap.logout()

    def _open(self) -> imaplib.IMAP4_SSL:
        if self.imap is None:
            raise MailboxError(f"{self._where()}: not connected")
        return self.imap

    def _cmd(
        self, what: str, command: Callable[..., tuple[str, list[Any]]], *args: str, allow_no: bool = False
    ) -> list[Any]:
        """Run one IMAP command -> its data; a NO/BAD answer or a lost connection is one line."""
        try:
            status, data = command(*args)
        except (imaplib.IMAP4.error, OSError) as exc:  # IMAP4.abort (the server hung up) is an error
            raise MailboxError(
                f"{self._where()}: {what} failed ({_said(exc)}); the messages not yet moved are read "
                "again next time"
            ) from None
        if status == "OK" or (allow_no and status == "NO"):
            return list(data)
        said = b" ".join(d for d in data if isinstance(d, bytes)).decode("utf-8", "replace")
        raise MailboxError(f"{self._where()}: {what} failed ({status} {said}); check bounces.imap")


def _said(exc: BaseException) -> str:
    text = str(exc)
    return text[2:-1] if text.startswith("b'") else text


def _quote(name: str) -> str:
    """An IMAP quoted string (RFC 3501 §4.3): folder names may hold spaces."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def make_source(settings: BounceSettings, base_dir: Path) -> BounceSource | None:
    if settings.imap is not None:
        return ImapSource(settings.imap, base_dir)
    if settings.maildir is not None:
        return MaildirSource((base_dir / settings.maildir).resolve())
    return None
