"""Rendering a digest: the stylesheet survives, hostile feed text is tamed, the HTML part stays
under Gmail's clipping size, the chrome speaks the reader's language. Pure: no browser here
(tests/test_render_browser.py looks at the pages in Chromium)."""

from __future__ import annotations

import email
import email.policy
import re
import unicodedata
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from digest.mail.render import (
    HTML_LIMIT,
    MAX_MARKS,
    PLACEHOLDER_LINKS,
    Links,
    Renderer,
    build_message,
    clean_text,
    fresh_summary,
    make_template,
)
from digest.model.assemble import Digest, DigestStory, Section
from digest.model.locales import Words, words_for
from digest.model.schedule import Period
from digest.model.subscribers import Subscriber

NOW = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
LINKS = Links(
    unsubscribe="https://digest.example.org/unsubscribe/MTIzNDU2.aGVsbG8gd29ybGQgdGhpcyBpcyBhIHRva2Vu",
    mailto="mailto:unsubscribe@digest.example.org?subject=unsubscribe%20MTIzNDU2.aGVsbG8",
    preferences="https://digest.example.org/preferences/MTIzNDU2.cHJlZmVyZW5jZXMgdG9rZW4gaGVyZQ",
    archive="https://digest.example.org/archive/MTIzNDU2.YXJjaGl2ZSB0b2tlbiBoZXJl/2026-03-02",
)


def story(i: int, title: str | None = None, summary: str | None = None, **kw) -> DigestStory:
    return DigestStory(
        story_id=i,
        title=title
        if title is not None
        else f"Story {i}: SCO ministers meet in Tianjin to discuss trade corridors",
        link=f"https://news.example.com/world/2026/03/01/sco-ministers-meet-{i}",
        outlet=kw.pop("outlet", "Example Wire – World"),
        published=NOW - timedelta(minutes=i),
        summary=summary
        if summary is not None
        else (
            "Leaders of the member states discussed regional security, trade corridors and energy "
            "projects, and agreed to meet again before the end of the year in the capital. " * 3
        )[:400],
        topics=("sco",),
        tags=("summit", "trade", "energy"),
        also=tuple((f"Outlet {j}", f"https://outlet{j}.example.net/news/{i}") for j in range(4)),
        why=(),
        **kw,
    )


def digest(stories: list[DigestStory], *, fmt: str = "html", more: int = 0, max_stories: int = 200) -> Digest:
    sub = Subscriber("reader@example.org", timezone="Europe/Berlin", format=fmt, max_stories=max_stories)
    return Digest(
        sub,
        Period("2026-03-02", NOW),
        (Section("sco", "Shanghai Cooperation Organisation", tuple(stories)),),
        more,
        tuple(s.story_id for s in stories),
    )


def mail(d: Digest, renderer: Renderer | None = None) -> email.message.EmailMessage:
    """The message one subscriber receives, by the path sending takes (render once, build per subscriber)."""
    renderer = renderer or Renderer(list_name="SCO & Putin–Xi digest")
    generic = renderer.render(d, PLACEHOLDER_LINKS)
    template = make_template(generic, sender="Digest <digest@example.org>", list_id="<sco.example.org>")
    raw = build_message(
        template, recipient="reader@example.org", msg_id="<x@example.org>", links=LINKS, date=NOW
    )
    return email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[return-value]


def html_of(msg: email.message.EmailMessage) -> str:
    return msg.get_body(("html",)).get_content()  # type: ignore[union-attr]


def test_the_stylesheet_is_inlined_unescaped_with_its_font_stack():
    html = html_of(mail(digest([story(1)])))
    body = re.search(r"<body[^>]*style=\"([^\"]*)\"", html)
    assert body is not None
    assert "font-family: -apple-system" in body.group(1)
    assert "Segoe UI" in body.group(1) and "WenQuanYi Zen Hei" in body.group(1)
    assert "&#34;" not in html and "&quot;Segoe" not in html
    assert "@media (prefers-color-scheme: dark)" in html  # kept in the head, not inlined away
    assert '<meta name="color-scheme" content="light dark">' in html


def test_the_web_copy_links_its_stylesheets_and_has_no_inline_style():
    page = Renderer(list_name="Digest").render(digest([story(1)]), LINKS, web=True).html
    assert page is not None
    assert 'href="/static/style.css"' in page and 'href="/static/style-head.css"' in page
    assert "style=" not in page and "<style" not in page  # a strict CSP would block both


@pytest.mark.parametrize("limit", [20, 200])
def test_the_html_part_stays_under_100_kb_and_the_rest_is_in_the_archive(limit):
    stories = [story(i) for i in range(limit)]
    msg = mail(digest(stories, max_stories=limit))
    html = html_of(msg)
    assert len(html.encode("utf-8")) <= HTML_LIMIT
    assert LINKS.unsubscribe in html and LINKS.preferences in html  # the footer is never cut
    shown = len(re.findall(r'class="story"', html))
    if shown < limit:
        more = re.search(r'<a href="([^"]+)"[^>]*>(\d+) more stories in the archive', html)
        assert more is not None and more.group(1) == LINKS.archive
        assert shown + int(more.group(2)) == limit
        assert shown >= 30  # fewer stories, not an empty mail
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert all(f"Story {i}:" in text for i in range(limit))  # the text part is never shortened


def test_bidi_controls_are_dropped_and_feed_text_is_isolated():
    title = "Breaking \u202enews\u202c from \u2067Tianjin\u2069 \u200f"
    html = html_of(mail(digest([story(1, title=title, outlet="\u202eWire")])))
    assert not re.search("[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]", html)
    assert re.search(r'<h3 class="headline" dir="auto"', html)
    assert re.search(r'<bdi class="outlet"[^>]*>Wire</bdi>', html)


def test_runs_of_combining_marks_are_cut():
    zalgo = "S" + "\u0301\u0302\u0303\u0304\u0305" * 100 + "CO"
    # NFC first (S + U+0301 is Ś), then at most MAX_MARKS marks on a letter
    assert clean_text(zalgo) == "\u015a" + "\u0302\u0303\u0304\u0305"[:MAX_MARKS] + "CO"
    html = html_of(mail(digest([story(1, title=zalgo)])))
    assert len(re.findall("[\u0301-\u0305]", html)) <= 2 * MAX_MARKS  # the title and the preheader


@given(st.text())
def test_clean_text_never_leaves_a_bidi_control_or_a_long_mark_run(text):
    out = clean_text(text)
    assert not re.search("[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]", out)
    run = 0
    for c in out:
        run = run + 1 if unicodedata.category(c) in ("Mn", "Me") else 0
        assert run <= MAX_MARKS


def test_vietnamese_and_hindi_keep_their_marks():
    for text in ("Thượng Hợp tác Thượng Hải", "शंघाई सहयोग संगठन", "Ё́лка"):
        assert clean_text(text) == unicodedata.normalize("NFC", text)


@pytest.mark.parametrize(
    ("title", "summary", "shown"),
    [
        ("Putin and Xi meet in Beijing", "Putin and Xi meet in Beijing", ""),
        ("Putin and Xi meet in Beijing", "PUTIN AND XI MEET IN BEIJING.", ""),
        ("Putin and Xi meet in Beijing", "Putin and Xi meet in Beijing - Reuters", ""),
        ("Putin and Xi meet in Beijing: full report", "Putin and Xi meet", ""),
        ("Putin and Xi meet in Beijing", "Putin and Xi meet in Beijing. Putin and Xi meet in Beijing", ""),
        (
            "Putin and Xi meet in Beijing",
            "Putin and Xi meet in Beijing. The leaders signed twelve agreements on energy and trade.",
            "The leaders signed twelve agreements on energy and trade.",
        ),
        (
            "Putin and Xi meet",
            "The leaders signed twelve agreements.",
            "The leaders signed twelve agreements.",
        ),
    ],
)
def test_a_summary_that_repeats_its_headline_is_not_shown(title, summary, shown):
    assert fresh_summary(story(1, title=title, summary=summary)) == shown


def test_an_empty_summary_leaves_no_empty_paragraph():
    html = html_of(mail(digest([story(1, title="Same", summary="Same")])))
    assert 'class="summary"' not in html


@pytest.mark.parametrize(
    ("titles", "locale", "expect"),
    [
        (["Путин и Си провели переговоры", "Саммит ШОС открылся", "SCO summit"], "auto", "ru"),
        (["上海合作组织峰会开幕", "普京与习近平会谈", "SCO summit"], "auto", "zh"),
        (["SCO summit", "Саммит ШОС открылся"], "auto", "en"),  # a tie reads in English
        (["Путин и Си провели переговоры"], "en", "en"),
        ([], "auto", "en"),
    ],
)
def test_the_chrome_language_is_the_setting_or_that_of_most_headlines(titles, locale, expect):
    assert words_for(locale, titles).code == expect


def test_russian_chrome_has_russian_dates_plurals_and_links():
    stories = [story(i, title=f"Саммит ШОС открылся в Тяньцзине, день {i}") for i in range(5)]
    msg = mail(digest(stories, more=21), Renderer(list_name="Дайджест"))
    html, text = html_of(msg), msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert '<html lang="ru"' in html
    assert "понедельник, 2 марта 2026 · 5 новостей" in html
    assert "Шанхайская организация сотрудничества" in html
    assert "Также пишут" in html and "Отписаться" in html and "Открыть в браузере" in html
    assert "2 мар., 06:59" in html  # 05:59 UTC in Berlin
    assert "…и ещё 21 новость сегодня" in html
    assert str(msg["Subject"]) == "Дайджест — понедельник, 2 марта 2026 (5 новостей)"
    assert "Настройки: https://digest.example.org/preferences/" in text


def test_chinese_chrome_has_chinese_dates_and_headings():
    stories = [story(i, title=f"上海合作组织峰会在天津开幕 {i}") for i in range(2)]
    html = html_of(mail(digest(stories)))
    assert '<html lang="zh-Hans"' in html
    assert "2026年3月2日 星期一 · 2 条新闻" in html and "上海合作组织</h2>" in html
    assert "退订" in html and "3月2日 06:59" in html


@pytest.mark.parametrize(
    ("n", "word"),
    [
        (1, "новость"),
        (2, "новости"),
        (5, "новостей"),
        (11, "новостей"),
        (21, "новость"),
        (22, "новости"),
        (112, "новостей"),
    ],
)
def test_russian_plurals_follow_cldr(n, word):
    assert Words("ru").stories(n) == f"{n} {word}"


def test_weekly_periods_are_localised():
    d = digest([story(1)])
    weekly = Digest(d.subscriber, Period("2026-W10", NOW), d.sections, 0, d.story_ids)
    from digest.mail.render import period_label

    assert period_label(weekly, Words("en")) == "week 10, 2026"
    assert period_label(weekly, Words("ru")) == "10-я неделя 2026 года"
    assert period_label(weekly, Words("zh")) == "2026年第10周"


def test_the_preheader_is_the_first_headlines():
    html = html_of(mail(digest([story(1, title="First one"), story(2, title="Second one")])))
    pre = re.search(r'<div class="preheader"[^>]*>([^<]*)</div>', html)
    assert pre is not None and pre.group(1) == "First one · Second one"
