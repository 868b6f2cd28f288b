"""OPML in and out (feed lists from other readers). defusedxml: OPML files come from anywhere."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element, SubElement, tostring

from defusedxml import ElementTree as SafeET
from defusedxml.common import DefusedXmlException
from ruamel.yaml import YAML

from digest.config import FeedSettings
from digest.errors import ConfigError


def _slug(text: str) -> str:
    s = re.sub(r"[^\w]+", "-", text.strip().lower(), flags=re.UNICODE).strip("-")
    return s[:60] or "feed"


def read_opml(path: Path) -> list[tuple[str, str]]:
    """-> [(name, url)] for every outline with an xmlUrl, names made unique."""
    try:
        root = SafeET.parse(path).getroot()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such OPML file") from None
    except (SafeET.ParseError, DefusedXmlException) as exc:
        raise ConfigError(f"{path}: not readable OPML ({exc}); export it again from your reader") from None
    out: list[tuple[str, str]] = []
    used: set[str] = set()
    for node in root.iter("outline"):
        url = (node.get("xmlUrl") or node.get("xmlurl") or "").strip()
        if not url:
            continue
        base = _slug(node.get("title") or node.get("text") or url)
        name, n = base, 2
        while name in used:
            name, n = f"{base}-{n}", n + 1
        used.add(name)
        out.append((name, url))
    if not out:
        raise ConfigError(f"{path}: no <outline xmlUrl=...> entries found; is it an OPML feed list?")
    return out


def write_opml(feeds: Iterable[FeedSettings], title: str = "digest feeds") -> str:
    opml = Element("opml", version="2.0")
    head = SubElement(opml, "head")
    SubElement(head, "title").text = title
    body = SubElement(opml, "body")
    for f in feeds:
        SubElement(body, "outline", type="rss", text=f.name, title=f.name, xmlUrl=f.url)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + tostring(opml, encoding="unicode") + "\n"


def add_feeds_to_config(config_path: Path, new: list[tuple[str, str]]) -> list[str]:
    """Add feeds to the `feeds:` list of a YAML file. -> names added.

    The file is someone's: its comments, quoting, wrapping and trailing spaces stay byte for byte.
    The new items are inserted as text after the last feed, indented like the first one; ruamel
    only reads where that is (a round-trip dump would re-indent and rewrap the whole file). A file
    with nothing new is not written at all.
    """

    text = config_path.read_bytes().decode("utf-8")  # as it is: read_text() would turn CRLF into LF
    data = YAML().load(text) or {}
    feeds = data.get("feeds") if hasattr(data, "get") else None
    feeds = feeds or []
    names = {f.get("name") for f in feeds if hasattr(f, "get")}
    urls = {f.get("url") for f in feeds if hasattr(f, "get")}
    added: list[tuple[str, str]] = []
    for name, url in new:
        if url in urls:
            continue
        base, n = name, 2
        while name in names:
            name, n = f"{base}-{n}", n + 1
        names.add(name)
        urls.add(url)
        added.append((name, url))
    if not added:
        return []
    new_text = _insert_feeds(text, data, added)
    tmp = config_path.with_suffix(config_path.suffix + ".tmp")
    tmp.write_bytes(new_text.encode("utf-8"))
    tmp.replace(config_path)  # atomic: a crash never leaves half a config
    return [name for name, _ in added]


def _insert_feeds(text: str, data: Any, added: list[tuple[str, str]]) -> str:

    newline = "\r\n" if "\r\n" in text else "\n"
    lines = text.splitlines(keepends=True)
    feeds = data.get("feeds") if hasattr(data, "get") else None

    def items(dash: str) -> list[str]:
        # JSON strings are YAML double-quoted scalars: any name or URL is written safely
        return [
            f"{dash}- name: {json.dumps(name, ensure_ascii=False)}{newline}"
            f"{dash}  url: {json.dumps(url, ensure_ascii=False)}{newline}"
            for name, url in added
        ]

    if not feeds or feeds.fa.flow_style():
        if "feeds" in (data or {}):
            line = data.lc.key("feeds")[0]
            empty = re.fullmatch(r"feeds:\s*(?:\[\s*\])?\s*(#.*)?", lines[line].rstrip("\r\n"))
            if not empty:  # `feeds: [...]` with items: only a re-dump can extend it
                return _redump(text, added)
            comment = f"  {empty.group(1)}" if empty.group(1) else ""
            lines[line] = f"feeds:{comment}{newline}"
            return "".join(lines[: line + 1] + items("  ") + lines[line + 1 :])
        tail = "" if not text or text.endswith(("\n", "\r")) else newline
        return text + tail + f"feeds:{newline}" + "".join(items("  "))
    last_line = feeds.lc.item(len(feeds) - 1)[0]
    first_line, first_col = feeds.lc.item(0)
    dash = lines[first_line][: lines[first_line].rfind("-", 0, first_col + 1)]
    keys = list(data)
    after = keys.index("feeds") + 1
    at = data.lc.key(keys[after])[0] if after < len(keys) else len(lines)
    # comments and blank lines at the left margin before the next key belong to it
    while at - 1 > last_line and (not lines[at - 1].strip() or lines[at - 1].startswith("#")):
        at -= 1
    if at and not lines[at - 1].endswith(("\n", "\r")):
        lines[at - 1] += newline
    return "".join(lines[:at] + items(dash) + lines[at:])


def _redump(text: str, added: list[tuple[str, str]]) -> str:

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096  # a long URL stays on its line
    data = yaml.load(text)
    for name, url in added:
        data["feeds"].append({"name": name, "url": url})
    buf = io.StringIO()
    yaml.dump(data, buf)
    return buf.getvalue()
