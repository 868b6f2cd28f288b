"""OPML in and out (feed lists from other readers). defusedxml: OPML files come from anywhere."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from xml.etree.ElementTree import Element, SubElement, tostring

from defusedxml import ElementTree as SafeET
from defusedxml.common import DefusedXmlException

from .config import FeedSettings
from .errors import ConfigError


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
    """Append feeds to the `feeds:` list of a YAML file, keeping its comments. -> names added."""
    from ruamel.yaml import YAML

    yaml = YAML()  # round-trip: comments and layout survive
    yaml.preserve_quotes = True
    data = yaml.load(config_path.read_text(encoding="utf-8")) or {}
    feeds = data.setdefault("feeds", [])
    names = {f.get("name") for f in feeds}
    urls = {f.get("url") for f in feeds}
    added = []
    for name, url in new:
        if url in urls:
            continue
        base, n = name, 2
        while name in names:
            name, n = f"{base}-{n}", n + 1
        feeds.append({"name": name, "url": url})
        names.add(name)
        added.append(name)
    tmp = config_path.with_suffix(config_path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        yaml.dump(data, fh)
    tmp.replace(config_path)  # atomic: a crash never leaves half a config
    return added
