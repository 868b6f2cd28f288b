"""Which links may reach an href in mail, pages and feeds. Pure."""

from __future__ import annotations

from urllib.parse import urlsplit

# Only these schemes reach an href: a feed's `javascript:` or `data:` link would run in the reader's
# browser when clicked (issue 12). Anything else is dropped and its text kept.
SAFE_SCHEMES = ("http", "https", "mailto")
_C0_AND_SPACE = "".join(chr(i) for i in range(0x21))


def safe_href(url: str | None) -> str | None:
    """`url` if it is an absolute http(s) URL with a host, or a mailto: URL; else None. Pure.

    Read as a browser reads an href (WHATWG URL Standard, basic URL parser): leading and trailing
    C0 controls and spaces are stripped and tabs and newlines removed anywhere, so that
    " java\tscript:..." is seen as the javascript: URL it becomes. What is returned is that
    cleaned form; a URL still holding a control character is dropped.
    """
    if not url:
        return None
    cleaned = url.translate({9: None, 10: None, 13: None}).strip(_C0_AND_SPACE)
    if not cleaned or any(ord(c) < 0x20 or ord(c) == 0x7F for c in cleaned):
        return None
    scheme, sep, rest = cleaned.partition(":")
    scheme = scheme.lower()
    if not sep or scheme not in SAFE_SCHEMES:
        return None
    if scheme == "mailto":
        return cleaned if rest.strip() else None
    try:
        host = urlsplit(cleaned).hostname
    except ValueError:  # e.g. an unbalanced [ in the host
        return None
    # "https:evil" or "https:\\\\evil" has no authority as written; a browser would guess one: dropped
    return cleaned if host and rest.startswith("//") else None
