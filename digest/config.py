"""Load and validate `feeds.yaml`: the first stage, and the only place config errors are made.

Lookup order: `--config PATH`, then `$DIGEST_CONFIG`, then `./feeds.yaml`, then the defaults
embedded in the package. Strings may use `${ENV_VAR}` (or `${ENV_VAR:-default}`) for secrets.
Every error names the file, the key path and the fix, on one line.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from digest.defaults import embedded_text
from digest.errors import ConfigError, DigestError
from digest.model.fold import ClusteringSettings
from digest.model.records import RulesSource
from digest.model.rules import CompiledRules, compile_source
from digest.model.settings import Duration, Size, format_validation_error
from digest.model.subscribers import make_subscriber


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HttpSettings(_Model):
    # Each host has its own small pool (fetch.py), so this cap costs nothing by itself: 200 lets
    # a poll of 200 feeds go in one round of latency (100 took two, 64 four: bench/RESULTS.md).
    # per_host is what any one server sees.
    concurrency: int = Field(200, ge=1, le=1024, description="requests in flight at once, over all hosts")
    per_host: int = Field(4, ge=1, le=64, description="connections to one host at once")
    connect_timeout: Duration = 10.0
    read_timeout: Duration = 20.0
    deadline: Duration = Field(60.0, description="total time for one feed, however slowly it drips")
    max_body: Size = Field(8 * 2**20, description="cap on the bytes on the wire")
    max_decoded: Size = Field(32 * 2**20, description="cap on the body after gzip/deflate")
    max_redirects: int = Field(5, ge=0, le=20)
    user_agent: str = "digest/0.1 (feed-to-mail digest; +https://github.com/digest-news/digest)"
    default_interval: Duration = Field(1800.0, description="how often a feed is polled")
    max_backoff: Duration = Field(86400.0, description="longest wait after repeated failures")
    workers: int = Field(0, ge=0, le=64, description="processes that fetch and parse; 0 = one per core")


class FeedSettings(_Model):
    name: str = Field(min_length=1, max_length=100)
    url: str = Field(min_length=1)
    interval: Duration | None = None
    enabled: bool = True
    language: str | None = None
    tags: tuple[str, ...] = ()
    timezone: str | None = Field(None, description="IANA zone for dates without an offset (and CST)")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if v != v.strip() or any(c in v for c in "\r\n\t"):
            raise ValueError(f"{v!r} has leading/trailing spaces or control characters; use a short label")
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if any(c.isspace() for c in v):
            raise ValueError(f"{v!r} contains a space; remove it, or write it as %20 if the address has one")
        scheme = urlsplit(v).scheme.lower()
        if scheme in ("http", "https"):
            if not urlsplit(v).netloc:
                raise ValueError(f"{v!r} has no host; write e.g. 'https://example.org/feed.xml'")
        elif scheme not in ("file", "") and not (len(scheme) == 1 and v[1:3] in (":\\", ":/")):
            raise ValueError(f"{v!r} is not an http(s) or file URL, nor a path")
        return v

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        if v is not None:
            _check_zone(v)
        return v

    @field_validator("language")
    @classmethod
    def _language(cls, v: str | None) -> str | None:
        # a BCP 47 tag (RFC 5646): its primary subtag picks the rules' stemmer and a date zone
        if v is None or _LANGUAGE_TAG.fullmatch(v):
            return v
        code = _LANGUAGE_NAMES.get(v.strip().lower())
        hint = f"write {code!r}" if code else "write a language code such as 'en', 'ru' or 'zh'"
        raise ValueError(f"{v!r} is not a language code (BCP 47); {hint}")


_LANGUAGE_TAG = re.compile(r"[a-z]{2,3}(?:-[A-Za-z0-9]{1,8})*")
_LANGUAGE_NAMES = {
    "english": "en", "russian": "ru", "русский": "ru", "chinese": "zh", "中文": "zh", "mandarin": "zh",
    "german": "de", "french": "fr", "spanish": "es", "arabic": "ar", "hindi": "hi", "japanese": "ja",
    "kazakh": "kk", "kyrgyz": "ky", "uzbek": "uz", "tajik": "tg", "persian": "fa", "farsi": "fa",
    "urdu": "ur", "portuguese": "pt", "italian": "it", "turkish": "tr", "korean": "ko",
}  # fmt: skip


def _check_zone(v: str) -> None:
    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{v!r} is not an IANA time zone; write e.g. 'Europe/Moscow'") from None


class SmtpSettings(_Model):
    host: str = "127.0.0.1"
    port: int = Field(587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: str | None = Field(None, description="write ${SMTP_PASSWORD}: never the password itself")
    timeout: Duration = 30.0
    connections: int = Field(4, ge=1, le=64, description="SMTP connections kept open at once")
    per_connection: int = Field(100, ge=1, description="messages before a connection is renewed")
    rate: float = Field(0.0, ge=0, description="messages per second at most; 0 = no limit")
    retries: int = Field(3, ge=0, le=20, description="tries after a 4xx reply or a dropped connection")
    retry_delay: Duration = Field(2.0, description="first wait before a retry; doubles each time")
    verify_tls: bool = True
    ca_file: str | None = Field(None, description="a CA bundle to verify the server with (a private CA)")


class DeliverySettings(_Model):
    transport: Literal["outbox", "smtp", "sendmail"] = "outbox"
    outbox: str = Field("outbox", description="Maildir folder for the outbox transport, beside feeds.yaml")
    sendmail_command: str = Field(
        "/usr/sbin/sendmail -oi",
        description="for transport: sendmail; `-f SENDER -- RECIPIENT` are added, one message per run",
    )
    smtp: SmtpSettings = SmtpSettings()
    sender: str = "SCO & Putin–Xi digest <digest@localhost>"
    list_name: str = "SCO & Putin–Xi digest"
    list_id: str = "<sco-digest.localhost>"
    base_url: str = Field(
        "http://localhost:8080", description="public URL of `digest serve`: every link uses it"
    )
    secret: str | None = Field(None, description="signs unsubscribe links; write ${DIGEST_SECRET}")
    templates: str | None = Field(None, description="template folder (default: templates/ beside feeds.yaml)")
    send_empty: bool = Field(False, description="send a digest even when nothing is new")
    lookback: Duration = Field(86400.0, description="how far back a subscriber's first digest reaches")
    instant_every: Duration = Field(
        900.0, ge=60, description="cadence instant: at most one mail per this window (a burst is one mail)"
    )
    bounce_limit: int = Field(
        3, ge=1, description="permanent failures before a subscriber is marked bouncing"
    )
    bounce_address: str | None = Field(
        None,
        description="return path for digests, e.g. bounces@example.org: each message is sent from "
        "bounces+TOKEN@example.org (VERP), so a bounce names its subscriber",
    )
    locale: Literal["auto", "en", "ru", "zh"] = Field(
        "auto",
        description="language of the digest's headings, dates and links; auto: that of most of its headlines",
    )
    archive: Literal["private", "public"] = Field(
        "private",
        description="private: a digest's web copy needs the subscriber's signed link; public: it does not",
    )
    lease: Duration = Field(
        120.0,
        description="how long a sender's claim on a digest (and a poller's on a feed) holds; a crashed "
        "sender's digests are sent by another after it",
    )

    @field_validator("bounce_address")
    @classmethod
    def _bounce_address(cls, v: str | None) -> str | None:
        if v is None:
            return v
        local, at, domain = v.strip().rpartition("@")
        if not at or not local or "." not in domain or not v.isascii() or any(c in v for c in ' <>"(),;'):
            raise ValueError(f"{v!r} is not a bare ASCII address; write e.g. bounces@example.org")
        if "+" in local:
            raise ValueError(
                f"{v!r}: digest adds +TOKEN to the local part itself; write the base address, "
                f"e.g. {local.partition('+')[0]}@{domain}"
            )
        return v.strip()

    def base_url_warning(self) -> str | None:
        """One line when base_url is not https: RFC 8058 §3.1 one-click unsubscribe needs an https
        URI, and Gmail and Yahoo require it of bulk senders (support.google.com/a/answer/81126)."""
        if self.base_url.lower().startswith("https://"):
            return None
        return (
            f"delivery.base_url is {self.base_url!r}, not https: Gmail and Yahoo ignore one-click "
            "unsubscribe over http; serve `digest serve` behind https and set base_url to that URL"
        )


class DaemonSettings(_Model):
    tick: Duration = Field(60.0, description="how often the daemon looks for due feeds and due digests")
    housekeeping: Duration = Field(
        86400.0, description="how often old entries are removed and the database tidied"
    )
    retention: Duration = Field(
        180 * 86400.0, description="entries first seen longer ago than this are removed"
    )
    operator: str | None = Field(
        None, description="address for the daily operator report (failing feeds, figures)"
    )


class WebSettings(_Model):
    trusted_proxies: tuple[str, ...] = Field(
        (),
        description="addresses or networks of reverse proxies whose X-Forwarded-For is believed; "
        "none by default: a client could name any address in it",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, v: tuple[str, ...]) -> tuple[str, ...]:

        for net in v:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(
                    f"{net!r} is not an IP address or network; write e.g. 10.0.0.5 or 10.0.0.0/24"
                ) from None
        return v


class ImapSettings(_Model):
    host: str = Field(min_length=1)
    port: int = Field(993, ge=1, le=65535, description="IMAP over TLS (RFC 8314): 993")
    username: str = Field(min_length=1)
    password_env: str = Field(
        "DIGEST_BOUNCES_PASSWORD", description="the environment variable holding the password"
    )
    folder: str = Field("INBOX", description="where bounces arrive")
    processed_folder: str = Field("processed", description="where read reports are moved")
    unknown_folder: str = Field("unknown", description="where messages that are no report are moved")
    timeout: Duration = 30.0
    verify_tls: bool = True
    ca_file: str | None = Field(None, description="a CA bundle to verify the server with (a private CA)")

    @field_validator("password_env")
    @classmethod
    def _env_name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v):
            raise ValueError(
                f"{v!r} is not the name of an environment variable; write e.g. DIGEST_BOUNCES_PASSWORD "
                "and export the password in it (never the password itself)"
            )
        return v


class BounceSettings(_Model):
    maildir: str | None = Field(None, description="a Maildir the MTA delivers bounces to (beside feeds.yaml)")
    imap: ImapSettings | None = None
    every: Duration = Field(300.0, description="how often the daemon reads the bounce mailbox")

    @model_validator(mode="after")
    def _one_mailbox(self) -> BounceSettings:
        if self.maildir is not None and self.imap is not None:
            raise ValueError("give either maildir or imap, not both; digest reads one bounce mailbox")
        return self

    @property
    def configured(self) -> bool:
        return self.maildir is not None or self.imap is not None


SUPPORTED_DATABASES = "SQLite (sqlite:///digest.db) or PostgreSQL (postgresql+psycopg://user@host/db)"


class Config(_Model):
    database: str = "sqlite:///digest.db"
    http: HttpSettings = HttpSettings()
    feeds: tuple[FeedSettings, ...] = ()
    # Sections that later stages read; validated by their own models (model/rulespec.py, model/fold.py).
    terms: dict[str, Any] | None = None
    topics: dict[str, Any] | None = None
    tags: dict[str, Any] | None = None
    clustering: dict[str, Any] | None = None
    max_age: Duration = Field(
        3 * 86400.0,
        description="an entry published longer than this before it was first seen is old news:"
        " stored and explained, never mailed (a newly added feed's archive)",
    )
    delivery: DeliverySettings = DeliverySettings()
    daemon: DaemonSettings = DaemonSettings()
    web: WebSettings = WebSettings()
    bounces: BounceSettings = BounceSettings()
    subscribers: tuple[dict[str, Any], ...] = ()

    @field_validator("database")
    @classmethod
    def _database(cls, v: str) -> str:
        scheme = v.split(":", 1)[0].split("+", 1)[0].lower()
        if scheme not in ("sqlite", "postgresql", "postgres"):
            raise ValueError(f"{v!r}: digest stores its data in {SUPPORTED_DATABASES}; use one of those")
        if scheme == "postgres":  # SQLAlchemy 1.4 dropped the alias (Heroku-style URLs still use it)
            raise ValueError(f"{v!r}: write postgresql+psycopg:// instead of postgres://")
        return v

    @field_validator("feeds")
    @classmethod
    def _unique(cls, feeds: tuple[FeedSettings, ...]) -> tuple[FeedSettings, ...]:
        seen: set[str] = set()
        for f in feeds:
            if f.name in seen:
                raise ValueError(f"feed name {f.name!r} is used twice; give each feed its own name")
            seen.add(f.name)
        return feeds

    def feed(self, name: str) -> FeedSettings:
        for f in self.feeds:
            if f.name == name:
                return f
        raise ConfigError(f"no feed named {name!r} in the config; `digest feeds list` shows the names")

    def interval(self, feed: FeedSettings) -> float:
        return feed.interval or self.http.default_interval


class LoadedConfig:
    """A validated config plus where it came from (paths in it resolve against `base_dir`)."""

    def __init__(self, config: Config, source: str, base_dir: Path) -> None:
        self.config = config
        self.source = source
        self.base_dir = base_dir
        self._rules: CompiledRules | None = None
        self._rules_hash: str | None = None
        self._clustering: ClusteringSettings | None = None

    def _own_rules(self) -> dict[str, Any]:
        c = self.config
        return {"terms": c.terms, "topics": c.topics, "tags": c.tags}

    @property
    def rules(self) -> CompiledRules:
        """The compiled topic and tag rules (digest.model.rules.CompiledRules), built on first use."""
        if self._rules is None:
            self._rules = compile_source(self.rules_source())
        return self._rules

    def compiled_rules(self) -> tuple[CompiledRules, str] | None:
        """The rules and their hash if they were compiled already (None: not yet)."""
        return None if self._rules is None else (self._rules, self.rules_hash)

    def rules_source(self) -> RulesSource:
        return RulesSource(self._own_rules(), self.source, self.rules_hash)

    @property
    def clustering(self) -> ClusteringSettings:
        """The `clustering:` settings (digest.model.fold.ClusteringSettings)."""
        if self._clustering is None:
            try:
                self._clustering = ClusteringSettings.model_validate(self.config.clustering or {})
            except ValidationError as err:
                raise ConfigError(
                    format_validation_error(err, self.source, prefix=("clustering",), root=Config)
                ) from None
        return self._clustering

    @property
    def rules_hash(self) -> str:
        """Changes whenever the rules or clustering settings do: stored decisions are then redone.
        Computed once (a JSON dump of every rule: asked for by each fetch, poll and organise)."""
        if self._rules_hash is None:
            self._rules_hash = self._hash_rules()
        return self._rules_hash

    def _hash_rules(self) -> str:

        # Sections left out come from the shipped feeds.yaml: its bytes stand for them, so that a
        # warm run need not parse that file just to learn that nothing changed.
        own = self._own_rules()
        data = {**own, "clustering": self.config.clustering or {}}
        digest = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode())
        if any(v is None for v in own.values()):
            digest.update(embedded_text("feeds.yaml").encode())
        return digest.hexdigest()[:16]

    @property
    def database_url(self) -> str:
        return resolve_database_url(self.config.database, self.base_dir)

    def feed_url(self, url: str) -> str:
        """Plain paths and relative file: URLs resolve beside the config file."""
        parts = urlsplit(url)
        if parts.scheme in ("http", "https", "file"):
            return url
        return (self.base_dir / url).resolve().as_uri()


def resolve_database_url(url: str, base_dir: Path) -> str:
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite://":
        rest = url[len(prefix) :]
        if rest and rest != ":memory:" and not rest.startswith("file:"):
            return prefix + str((base_dir / rest).resolve())
    return url


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand(value: Any, where: str, source: str) -> Any:
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise ConfigError(
                f"{source}: {where}: environment variable {name} is not set; "
                f"export it, or write ${{{name}:-default}}"
            )

        return _ENV.sub(sub, value)
    if isinstance(value, dict):
        return {k: _expand(v, f"{where}.{k}" if where else str(k), source) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, f"{where}[{i}]", source) for i, v in enumerate(value)]
    return value


MAX_CONFIG_BYTES = 2**20
# Where an anchor (&name) or an alias (*name) could start; the token scan below decides.
_MAYBE_ANCHOR = re.compile(r"(?:^|[\s\[{,:?-])[&*][^\s,\[\]{}]", re.M)


def refuse_unsafe_yaml(text: str, source: str) -> None:
    """Refuse, before parsing, what would make parsing costly: over 1 MiB, or any anchor or alias.

    An alias expands to a copy of what its anchor names, so nine lines of nested aliases (the
    "billion laughs") make a loader build billions of nodes: 2.1 GB and 56 s here before any
    error (issue 12). A feed list never needs them. Scanning (tokens, no nodes) costs little.
    """
    if len(text) > MAX_CONFIG_BYTES or len(text.encode("utf-8")) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{source}: larger than 1 MiB; a feeds.yaml is a few KiB, check it is the right file"
        )
    if not _MAYBE_ANCHOR.search(text):
        return
    try:
        for token in yaml.scan(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
            if isinstance(token, yaml.AnchorToken | yaml.AliasToken):
                mark = token.start_mark
                raise ConfigError(
                    f"{source}: line {mark.line + 1}, column {mark.column + 1}: YAML anchors and aliases "
                    "(&name, *name) are not accepted; write the value out in full"
                )
    except yaml.YAMLError:
        return  # not valid YAML: the parser says where, below


def parse_config(text: str, source: str, base_dir: Path) -> LoadedConfig:
    refuse_unsafe_yaml(text, source)
    try:
        # libyaml's loader when built in: 5x faster on a long feed list
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}: {where}not valid YAML ({problem}); fix the syntax there") from None
    if data is None:
        raise ConfigError(
            f"{source}: the file is empty; write at least `feeds:` with one feed (see the shipped "
            "feeds.yaml), or remove the file to use the built-in one"
        )
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping (feeds:, http:, database: ...)")
    data = _expand(data, "", source)
    try:
        config = Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source, root=Config)) from None
    for f in config.feeds:
        if f.interval is not None and f.interval < 60:
            raise ConfigError(
                f"{source}: feeds[{f.name}].interval: polling more often than once a "
                "minute is impolite; use 60 or more"
            )
    # checked here, not at the first send: a bad address would otherwise pass `feeds list`,
    # `status` and `fetch`, then fail every run

    for i, sub in enumerate(config.subscribers):
        try:
            make_subscriber(sub, where=f"{source}: subscribers[{i}]")
        except DigestError as exc:
            raise ConfigError(str(exc)) from None
    return LoadedConfig(config, source, base_dir)


def find_config_path(explicit: str | os.PathLike[str] | None) -> Path | None:
    if explicit:
        return Path(explicit)
    env = os.environ.get("DIGEST_CONFIG")
    if env:
        return Path(env)
    local = Path("feeds.yaml")
    return local if local.is_file() else None


def load_config(explicit: str | os.PathLike[str] | None = None) -> LoadedConfig:
    path = find_config_path(explicit)
    if path is None:
        return parse_config(embedded_text("feeds.yaml"), "embedded feeds.yaml", Path.cwd())
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found; pass --config PATH or set DIGEST_CONFIG") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{path}: cannot read the config file ({exc}); check its permissions and that it is UTF-8"
        ) from None
    return parse_config(text, str(path), path.resolve().parent)
