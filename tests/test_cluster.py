"""Folding one story from many outlets: canonical URLs, guards, and the incremental clusterer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from digest.cluster import (
    ClusteringSettings,
    StoryEntry,
    canonical_url,
    cluster,
    decode_google_news,
    story_entry,
)

T0 = datetime(2022, 9, 15, 12, 0, tzinfo=UTC)
S = ClusteringSettings()


def entry(
    id: int,
    title: str,
    summary: str = "",
    *,
    hours: float = 0,
    entities=(),
    title_entities=(),
    link: str | None = None,
    lang: str = "en",
    dated: bool = True,
    source: str | None = None,
) -> StoryEntry:
    return story_entry(
        id, title=title, summary=summary, link=link, guid=None, published=T0 + timedelta(hours=hours),
        published_fallback=not dated, language=lang, source_title=source, entities=entities,
        title_entities=title_entities,
    )  # fmt: skip


def test_canonical_url_strips_tracking_and_normalises_variants():
    base = "https://www.example.org/world/2022/09/15/putin-xi-samarkand"
    variants = [
        base + "/?utm_source=rss&utm_medium=feed",
        "http://example.org/world/2022/09/15/putin-xi-samarkand#comments",
        "https://m.example.org/world/2022/09/15/putin-xi-samarkand/amp/",
        "https://www-example-org.cdn.ampproject.org/c/s/www.example.org/world/2022/09/15/putin-xi-samarkand",
        base + "?fbclid=abc&gclid=x",
    ]
    assert {canonical_url(v) for v in variants} == {canonical_url(base)}
    assert canonical_url("https://example.org/a?id=42") != canonical_url("https://example.org/a?id=43")


def test_old_google_news_ids_decode_to_the_publisher_and_new_ones_give_nothing():
    import base64

    url = "https://www.example.org/india/sco-defence-meet"
    token = base64.urlsafe_b64encode(b"\x08\x13\x22" + bytes([len(url)]) + url.encode() + b"\xd2\x01\x00")
    gn = "https://news.google.com/rss/articles/" + token.decode().rstrip("=") + "?oc=5"
    assert decode_google_news(gn) == url
    assert canonical_url(gn) == canonical_url(url)
    assert canonical_url("https://news.google.com/rss/articles/CBMiqwFBVV95cUxPopaque?oc=5") is None


@given(st.from_regex(r"https?://(www\.|m\.)?[a-z]{3,8}\.(com|org)(/[a-z0-9-]{1,8}){0,3}/?(\?utm_source=[a-z]{1,5})?",
                     fullmatch=True))  # fmt: skip
def test_canonical_url_is_idempotent(url):
    once = canonical_url(url)
    assert canonical_url(once) == once


PUTIN_XI = ("leader_putin", "leader_xi", "place_samarkand", "org_sco")


def test_reports_of_one_meeting_fold_into_one_story():
    a = entry(1, "Putin, Xi meet in Samarkand", "Talks at the SCO summit on Ukraine.", entities=PUTIN_XI,
              title_entities=PUTIN_XI[:2])  # fmt: skip
    b = entry(2, "Xi and Putin hold talks in Samarkand amid war", "The two leaders met at the SCO summit.",
              hours=3, entities=PUTIN_XI, title_entities=PUTIN_XI[:2])  # fmt: skip
    zh = entry(3, "习近平在撒马尔罕会见俄罗斯总统普京", "上海合作组织峰会期间。", hours=1, entities=PUTIN_XI,
               title_entities=PUTIN_XI[:2], lang="zh")  # fmt: skip
    got = cluster([a, b, zh], S)
    assert got[1] == got[2] == got[3]


def test_a_next_day_follow_up_stays_separate():
    a = entry(
        1,
        "SCO summit opens in Samarkand",
        "Leaders arrive for the summit.",
        entities=("org_sco", "place_samarkand"),
    )
    b = entry(2, "SCO summit closes in Samarkand with declaration", "Leaders adopt the summit declaration.",
              hours=26, entities=("org_sco", "place_samarkand", "event_declaration"))  # fmt: skip
    got = cluster([a, b], S)
    assert got[1] != got[2]


def test_a_preview_is_not_the_event():
    a = entry(1, "Putin and Xi to meet in Samarkand this week", "Kremlin confirms talks at the SCO summit.",
              entities=PUTIN_XI, title_entities=PUTIN_XI[:2])  # fmt: skip
    b = entry(2, "Putin and Xi meet in Samarkand", "Talks at the SCO summit.", hours=10, entities=PUTIN_XI,
              title_entities=PUTIN_XI[:2])  # fmt: skip
    assert len(set(cluster([a, b], S).values())) == 2


def test_a_similar_headline_about_other_leaders_stays_separate():
    a = entry(1, "Putin meets Xi at SCO summit in Samarkand", "Talks on Ukraine.", entities=PUTIN_XI,
              title_entities=PUTIN_XI[:2])  # fmt: skip
    b = entry(2, "Putin meets Modi at SCO summit in Samarkand", "Talks on Ukraine.", hours=2,
              entities=("leader_putin", "leader_modi", "place_samarkand", "org_sco"),
              title_entities=("leader_putin", "leader_modi"))  # fmt: skip
    assert len(set(cluster([a, b], S).values())) == 2


def test_the_same_article_folds_even_past_the_window_guards():
    url = "https://example.org/a"
    a = entry(1, "One headline", link=url + "?utm_source=x")
    b = entry(2, "A rewritten headline", link=url, hours=30)
    assert cluster([a, b], S)[1] == cluster([a, b], S)[2]


def test_aggregator_suffix_is_ignored_for_headline_matches():
    a = entry(1, "Saudi cabinet approves SCO dialogue partner status", entities=("org_sco",))
    b = entry(2, "Saudi cabinet approves SCO dialogue partner status - Gulf Daily", hours=1,
              entities=("org_sco",), source="Gulf Daily")  # fmt: skip
    assert cluster([a, b], S)[1] == cluster([a, b], S)[2]


@given(st.floats(min_value=S.window / 3600 + 0.01, max_value=1000))
def test_entries_further_apart_than_the_window_never_share_a_story(hours):
    a = entry(
        1, "Putin and Xi hold talks", "Same words exactly.", entities=PUTIN_XI, title_entities=PUTIN_XI[:2]
    )
    b = entry(2, "Putin and Xi hold talks", "Same words exactly.", hours=hours, entities=PUTIN_XI,
              title_entities=PUTIN_XI[:2])  # fmt: skip
    assert cluster([a, b], S)[1] != cluster([a, b], S)[2]


def _reports() -> list[StoryEntry]:
    return [
        entry(1, "Putin, Xi meet in Samarkand", "Talks at the SCO summit.", entities=PUTIN_XI,
              title_entities=PUTIN_XI[:2]),
        entry(2, "习近平在撒马尔罕会见俄罗斯总统普京", "上海合作组织峰会期间。", entities=PUTIN_XI,
              title_entities=PUTIN_XI[:2], lang="zh"),
        entry(3, "Xi and Putin hold talks in Samarkand", "The leaders met at the SCO summit.",
              entities=PUTIN_XI, title_entities=PUTIN_XI[:2]),
        entry(4, "Modi meets Putin in Samarkand", "On the SCO sidelines.", hours=20,
              entities=("leader_modi", "leader_putin", "place_samarkand", "org_sco"),
              title_entities=("leader_modi", "leader_putin")),
    ]  # fmt: skip


def _partition(assignment: dict[int, int]) -> set[frozenset[int]]:
    groups: dict[int, set[int]] = {}
    for eid, sid in assignment.items():
        groups.setdefault(sid, set()).add(eid)
    return {frozenset(g) for g in groups.values()}


@given(st.permutations(_reports()))
def test_the_stories_do_not_depend_on_the_order_reports_arrive_in(reports):
    assert _partition(cluster(reports, S)) == {frozenset({1, 2, 3}), frozenset({4})}


def test_a_report_that_bridges_two_stories_merges_them():
    from digest.cluster import Clusterer, Story

    en = entry(1, "Putin and Xi meet", "In Samarkand.", entities=PUTIN_XI, title_entities=PUTIN_XI[:2])
    zh = entry(
        2, "习近平会见普京", "撒马尔罕。", entities=PUTIN_XI[:3], title_entities=PUTIN_XI[:2], lang="zh"
    )
    a, b = Story(10), Story(11)
    a.add(en)
    b.add(zh)
    c = Clusterer(S, [a, b], next_id=12)
    bridge = entry(3, "Putin and Xi meet in Samarkand", "At the SCO summit.", hours=1, entities=PUTIN_XI,
                   title_entities=PUTIN_XI[:2])  # fmt: skip
    sid = c.assign(bridge)
    assert c.story_of(10) == c.story_of(11) == sid
