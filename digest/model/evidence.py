"""Evidence scores: a topic decided by weighing what an entry says and where it says it. Pure.

The vocabulary is the term lists of feeds.yaml (in English, Russian lemmas and Chinese); this
module only says how their hits count. Each score adds the weights of the features below and
selects at its threshold (a topic's `threshold:` in feeds.yaml overrides it). Where a thing is
said matters: the headline (segment 0) says what the news is, the lead (the summary's first
sentence) what it is about, the rest of the summary may be background; two names count together
only within one sentence. The weights and why each is what it is: docs/rules.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from digest.model.terms import Hit, Hits


@dataclass(frozen=True, slots=True)
class Feature:
    """One piece of evidence and its weight: `field` is title, lead or summary; `shown` the words."""

    name: str
    weight: float
    field: str
    shown: str


@dataclass(frozen=True, slots=True)
class Score:
    topic: str
    total: float
    threshold: float
    features: tuple[Feature, ...]

    @property
    def selects(self) -> bool:
        return self.total >= self.threshold - 1e-9

    def line(self) -> str:
        sign = "≥" if self.selects else "<"
        return f"score {self.total:g} {sign} {self.threshold:g}"


@dataclass(frozen=True, slots=True)
class Scorer:
    name: str
    lists: tuple[str, ...]  # the term lists it reads (all must exist)
    triggers: tuple[str, ...]  # its score is 0 unless one of these is found
    threshold: float
    features: Callable[[Hits], list[Feature]]
    # What an entry needs to reach `threshold` (groups of parts, each part any of its lists;
    # rules.Triggers): derived from the weights, so that an entry without it is settled by the
    # cheap trigger scan. A lower threshold in feeds.yaml falls back to any of `triggers`.
    needs: tuple[tuple[tuple[str, ...], ...], ...] = ()

    def score(self, topic: str, hits: Hits, threshold: float) -> Score:
        found = self.features(hits) if hits.has(self.triggers) else []
        return Score(topic, round(sum(f.weight for f in found), 2), threshold, tuple(found))

    def triggers_at(self, threshold: float) -> tuple[tuple[tuple[str, ...], ...], ...]:
        if self.needs and threshold >= self.threshold:
            return self.needs
        return ((self.triggers,),)


def _where(segment: int) -> str:
    return "title" if segment == 0 else "lead" if segment == 1 else "summary"


def _shown(hits: Sequence[Hit]) -> str:
    """The words found, each once, in the order given; none inside another ("Си Цзиньпин", not
    also "Цзиньпин")."""
    inside = {
        id(h)
        for h in hits
        for o in hits
        if o is not h
        and o.segment == h.segment
        and o.start <= h.start
        and h.end <= o.end
        and o.end - o.start > h.end - h.start
    }
    return ", ".join(dict.fromkeys(h.matched for h in hits if id(h) not in inside))


# -- Putin and Xi -------------------------------------------------------------------------------

PUTIN = ("leader_putin", "role_putin")  # "Putin", "the Russian president", "Kremlin leader"
XI = ("leader_xi", "role_xi")
EVENT = ("cue_event", "cue_relation", "cue_together")  # what happens between them, or their ties

# Weights of the Putin–Xi score (threshold 2.5). The headline decides when it names both leaders
# joined ("Putin and Xi", "Xi–Putin", "Putin briefs Xi", "习近平同…普京"); a sentence of the summary
# naming both with an event decides with one more piece of evidence from the headline (one of
# them, or what happened); a headline about one of them meeting a third leader, or a stated
# absence, weighs against.
PX = {
    "headline_joined": 3.0,  # both leaders in the headline, joined by "and", ",", "with" or an event
    "headline_both": 1.0,  # both in the headline, not joined ("Scholz urges Xi to press Putin")
    "headline_both_call": 2.0,  # ... with a call word: the call is theirs ("Xi backs Putin … in video call")
    "listed": -2.0,  # the headline lists them among others ("Trump, Xi and Putin among leaders arriving")
    "headline_one": 0.5,  # one of them in the headline
    "headline_event": 1.0,  # an event or relationship word in a headline that names one or both
    "headline_event_only": 0.5,  # ... in a headline that names neither ("pipeline memorandum")
    "headline_countries": 0.5,  # both countries or capitals in a headline that names not both
    "headline_visit": 1.5,  # one of them visiting the other's country ("Putin lands in Beijing")
    "other_organisation": -1.0,  # a headline about another body's gathering (BRICS, G20) names neither
    "lead_both_event": 2.0,  # the lead names both, with an event or relationship word
    "rest_both_event": 1.5,  # a later sentence does
    "sentence_both": 0.5,  # a sentence names both, without one, or at another time ("since … in 2022")
    "other_counterpart": -1.5,  # the headline has one of them and another leader, and an event
    "absent": -3.0,  # the headline states an absence, or attendance by video of something else
}
PX_THRESHOLD = 2.5

_PUNCT = set(",&/-+:'s ")


def _joined(hits: Hits, segment: int, a: Sequence[Hit], b: Sequence[Hit]) -> str | None:
    """The words joining a mention of one leader to one of the other in a segment, if they are
    joined: nothing but punctuation, at most five words holding a comma, a connector
    (cue_pair: and, with, и, 同…) or an event word, or an event word just before the second
    name ("Putin … in talks with Xi", "… рядом с Путиным"). None otherwise."""
    text = hits.texts.get(segment)
    if text is None:
        return None
    han = any("\u3400" <= c <= "\u9fff" for c in text)
    links = hits.in_segment(segment, "cue_pair", *EVENT)
    a = sorted(a, key=lambda h: (h.start, -h.end))  # the fullest mention first ("Си Цзиньпин", not "Си")
    b = sorted(b, key=lambda h: (h.start, -h.end))
    for x in a:
        for y in b:
            first, second = (x, y) if x.start <= y.start else (y, x)
            lo, hi = first.end, second.start
            if hi < lo:  # the same words name both ("中俄元首": the Chinese and Russian heads of state)
                if second.start < first.end:
                    return text[first.start : max(first.end, second.end)]
                continue
            gap = text[lo:hi]
            if not gap.strip() or set(gap) <= _PUNCT:
                return text[first.start : second.end]
            if not han and len(gap.split()) == 1 and gap.strip().isalpha():
                # subject, verb, object: "Xi tells Putin", "Си Цзиньпин назвал Путина",
                # "Путин подарил Си Цзиньпину": one acts on the other
                return text[first.start : second.end]
            if (len(gap) > 12) if han else (len(gap.split()) > 5):
                continue
            if "," in gap or "&" in gap or any(lo <= h.start and h.end <= hi for h in links):
                return text[first.start : second.end]
    events = hits.in_segment(segment, *EVENT)
    for second_list, first_list in ((b, a), (a, b)):  # an event whose object is the one named second
        for second in second_list:
            if not any(f.end <= second.start for f in first_list):
                continue
            for h in events:
                if h.end <= second.start and any(f.end <= h.start for f in first_list):
                    between = text[h.end : second.start]
                    if (len(between) <= 3) if han else (len(between.split()) <= 2):
                        return text[h.start : second.end]
    return None


def _absent(hits: Hits, segment: int) -> list[Hit]:
    """A stated absence, or taking part by video in something that is not a call between them."""
    said = hits.in_segment(segment, "cue_absent")
    if said:
        return said
    remote = hits.in_segment(segment, "cue_remote")
    return remote if remote and not hits.in_segment(segment, "cue_call", "cue_talk") else []


def _visit(hits: Hits, p: list[Hit], x: list[Hit], out: list[Feature]) -> None:
    """One of them, alone in the headline, visiting the other's country: a state visit is
    a meeting with the host."""
    visit = hits.in_segment(0, "cue_visit")
    china = hits.in_segment(0, "country_china", "place_beijing") if p else []
    russia = hits.in_segment(0, "country_russia", "place_moscow") if x else []
    if visit and (china or russia):
        out.append(
            Feature(
                "a visit to the other's country",
                PX["headline_visit"],
                "title",
                _shown([*p, *x, *china, *russia, *visit]),
            )
        )


def putin_xi_features(hits: Hits) -> list[Feature]:
    out: list[Feature] = []
    p, x, ev = hits.in_segment(0, *PUTIN), hits.in_segment(0, *XI), hits.in_segment(0, *EVENT)
    joined = None
    if p and x:
        joined = _joined(hits, 0, p, x)
        # a call naming both is theirs, unless a third leader is named: "Scholz, in call with Xi,
        # urges pressure on Putin" is Scholz's call
        call = hits.in_segment(0, "cue_call") if not hits.in_segment(0, "other_leader") else []
        if joined:
            out.append(
                Feature("both leaders in the headline, joined", PX["headline_joined"], "title", joined)
            )
        elif call:
            out.append(
                Feature(
                    "both leaders in the headline, with a call",
                    PX["headline_both_call"],
                    "title",
                    _shown([*p, *x, *call]),
                )
            )
        else:
            out.append(
                Feature("both leaders in the headline", PX["headline_both"], "title", _shown([*p, *x]))
            )
    elif p or x:
        _visit(hits, p, x, out)
        out.append(Feature("one leader in the headline", PX["headline_one"], "title", _shown([*p, *x])))
        other = hits.in_segment(0, "other_leader")
        if other and ev:
            out.append(
                Feature("its counterpart is another leader", PX["other_counterpart"], "title", _shown(other))
            )
    if ev:
        if p or x:
            out.append(Feature("an event in the headline", PX["headline_event"], "title", _shown(ev)))
        else:
            out.append(Feature("an event in the headline", PX["headline_event_only"], "title", _shown(ev)))
    if not (p and x):
        china = hits.in_segment(0, "country_china", "place_beijing")
        russia = hits.in_segment(0, "country_russia", "place_moscow")
        if china and russia:
            out.append(
                Feature(
                    "both countries in the headline",
                    PX["headline_countries"],
                    "title",
                    _shown([*china, *russia]),
                )
            )
    if not (p or x) and hits.in_segment(0, "other_org"):
        out.append(
            Feature(
                "another body's news",
                PX["other_organisation"],
                "title",
                _shown(hits.in_segment(0, "other_org")),
            )
        )
    listed = hits.in_segment(0, "cue_listed")
    if listed and p and x:
        out.append(Feature("listed among others", PX["listed"], "title", _shown(listed)))
    absent = _absent(hits, 0)
    gathering = ("cue_absent", "cue_summit", "org_sco", "org_sco_acronym", "other_org")
    if absent and p and x and joined and not hits.in_segment(0, *gathering):
        # the two joined by video in an event of theirs ("Putin and Xi watch by video as work
        # starts on ..."), as a call is; not a summit or a body's gathering joined by video
        absent = []
    if absent and (p or x):
        out.append(Feature("absence stated", PX["absent"], "title", _shown(absent)))
    best: Feature | None = None
    for seg in hits.segments():
        if seg == 0:
            continue
        sp, sx = hits.in_segment(seg, *PUTIN), hits.in_segment(seg, *XI)
        if not (sp and sx) or _absent(hits, seg):
            continue
        sev = hits.in_segment(seg, *EVENT)
        listed = hits.in_segment(seg, "cue_listed")
        if sev and listed:  # "leaders including Xi and Putin attended": a list of who came
            f = Feature(
                "both leaders in one sentence, listed among others",
                PX["sentence_both"],
                _where(seg),
                _shown([*sp, *sx, *listed]),
            )
        elif sev and hits.in_segment(seg, "cue_timeshift"):  # "since Putin and Xi declared…": background
            f = Feature(
                "both leaders in one sentence, at another time",
                PX["sentence_both"],
                _where(seg),
                _shown([*sp, *sx]),
            )
        elif sev:
            w = PX["lead_both_event"] if seg == 1 else PX["rest_both_event"]
            f = Feature(
                "both leaders in one sentence, with an event", w, _where(seg), _shown([*sp, *sx, *sev])
            )
        else:
            f = Feature("both leaders in one sentence", PX["sentence_both"], _where(seg), _shown([*sp, *sx]))
        if best is None or f.weight > best.weight:
            best = f
    if best is not None:
        out.append(best)
    return out


PUTIN_XI = Scorer(
    "putin-xi",
    (*PUTIN, *XI, *EVENT, "cue_pair", "cue_listed", "cue_absent", "cue_remote", "cue_call", "cue_talk",
     "cue_visit", "other_leader", "other_org", "cue_timeshift", "country_china", "country_russia",
     "place_beijing", "place_moscow"),
    (*PUTIN, *XI),
    PX_THRESHOLD,
    putin_xi_features,
    # 2.5 needs both of them named, or one of them with the other's country (a visit): one
    # leader with an event in the headline and both countries reaches 2
    ((PUTIN, XI), (PUTIN, ("country_china", "place_beijing")), (XI, ("country_russia", "place_moscow"))),
)  # fmt: skip


# -- the SCO ------------------------------------------------------------------------------------

# Weights of the SCO score (threshold 2.5). The organisation or one of its bodies named in the
# headline decides, and so does a summit named by an SCO host city ("Tianjin summit") when the
# summary names the organisation. Named only in the summary, it must be the setting of what the
# headline reports: the same place, a meeting, the leaders or ministers who were there; a
# sentence that puts it in another time ("last year", "next month") is background.
SC = {
    "headline_named": 3.0,  # the SCO, its acronym in SCO context, or one of its bodies
    "headline_host_summit": 2.0,  # a summit, meeting or session with an SCO host city
    "lead_named": 1.0,  # the lead names it
    "rest_named": 0.5,  # a later sentence does
    "named_gathering": 0.5,  # ... with a summit, meeting, session, members, drill in that sentence
    "lead_named_gathering": 1.0,  # ... in the lead: what the item reports happened there
    "named_elsewhen": -1.0,  # ... with a word putting it in another time
    "headline_meeting": 0.5,  # the headline reports a meeting, talks, a visit, a summit
    "headline_place": 1.0,  # the headline names an SCO host city or the place that sentence names
    "described_at_host_summit": 1.0,  # a host city's summit in the headline, the summary describes
    # the organisation without naming it ("the eight-member bloc", "the bloc founded in Shanghai")
    "headline_people": 0.5,  # the headline names a leader or minister
}
SC_THRESHOLD = 2.5
NAMED = ("org_sco", "org_sco_body")


def _mentions(hits: Hits, segment: int, acronym_ok: bool) -> list[Hit]:
    found = hits.in_segment(segment, *NAMED)
    return found + hits.in_segment(segment, "org_sco_acronym") if acronym_ok else found


def _places(hits: Hits, segment: int) -> set[str]:
    return {n for n in hits.by_segment.get(segment, {}) if n.startswith("place_") and n != "sco_host_city"}


def sco_features(hits: Hits) -> list[Feature]:
    out: list[Feature] = []
    # the bare acronym means the SCO only in SCO context and with no sign of its other senses
    acronym_ok = hits.has(["cue_sco_context"]) and not hits.has(["cue_sco_other"])
    acronym = hits.in_segment(0, "org_sco_acronym") or next(
        (found for seg in hits.segments() if (found := hits.in_segment(seg, "org_sco_acronym"))), []
    )
    if acronym and not acronym_ok:  # shown, so that explain says why the acronym did not count
        other = [h for seg in hits.segments() for h in hits.in_segment(seg, "cue_sco_other")]
        why = f"another sense ({_shown(other)})" if other else "no SCO context"
        out.append(Feature(f"“SCO” not counted: {why}", 0.0, _where(acronym[0].segment), _shown(acronym)))
    named = _mentions(hits, 0, acronym_ok)
    if named:
        out.append(Feature("named in the headline", SC["headline_named"], "title", _shown(named)))
        return out
    gathering0 = hits.in_segment(0, "cue_gathering", "cue_visit", "cue_talk")
    host0 = hits.in_segment(0, "sco_host_city")
    best: tuple[float, list[Feature]] | None = None
    for seg in hits.segments():
        if seg == 0:
            continue
        m = _mentions(hits, seg, acronym_ok)
        if not m:
            continue
        fs = [
            Feature(
                "named in the summary",
                SC["lead_named"] if seg == 1 else SC["rest_named"],
                _where(seg),
                _shown(m),
            )
        ]
        g = hits.in_segment(seg, "cue_gathering")
        if g:
            w = SC["lead_named_gathering"] if seg == 1 else SC["named_gathering"]
            fs.append(Feature("at a gathering", w, _where(seg), _shown(g)))
        t = hits.in_segment(seg, "cue_timeshift")
        if t:
            fs.append(Feature("at another time", SC["named_elsewhen"], _where(seg), _shown(t)))
        place = host0 or [h for h in hits.in_segment(0, *(_places(hits, 0) & _places(hits, seg)))]
        if not place:  # the summary names a host city's summit: the place is its setting too
            for s2 in hits.segments():
                if s2 and hits.in_segment(s2, "sco_host_city") and hits.in_segment(s2, "cue_gathering"):
                    place = hits.in_segment(s2, "sco_host_city")
                    break
        if place:
            fs.append(
                Feature(
                    "the place",
                    SC["headline_place"],
                    "title" if place[0].segment == 0 else _where(place[0].segment),
                    _shown(place),
                )
            )
        total = sum(f.weight for f in fs)
        if best is None or total > best[0]:
            best = (total, fs)
    if host0 and hits.in_segment(0, "cue_gathering"):
        out.append(
            Feature(
                "a summit named by its host city",
                SC["headline_host_summit"],
                "title",
                _shown([*host0, *hits.in_segment(0, "cue_gathering")]),
            )
        )
    if best is None and host0 and hits.in_segment(0, "cue_gathering"):
        described = next(
            (
                found
                for seg in hits.segments()
                if seg and (found := hits.in_segment(seg, "org_sco_described"))
            ),
            [],
        )
        if described:
            out.append(
                Feature(
                    "described, at a host city's summit",
                    SC["described_at_host_summit"],
                    _where(described[0].segment),
                    _shown(described),
                )
            )
    if best is None:
        return out
    out.extend(best[1])
    if gathering0:
        out.append(Feature("a meeting in the headline", SC["headline_meeting"], "title", _shown(gathering0)))
    people = [
        h
        for n, hs in hits.by_segment.get(0, {}).items()
        if n.startswith(("leader_", "person_", "role_"))
        for h in hs
    ]
    if people:
        out.append(Feature("leaders in the headline", SC["headline_people"], "title", _shown(people)))
    return out


SCO = Scorer(
    "sco",
    (*NAMED, "org_sco_acronym", "org_sco_described", "cue_sco_context", "cue_sco_other", "cue_gathering",
     "cue_visit", "cue_talk", "cue_timeshift", "sco_host_city"),
    (*NAMED, "org_sco_acronym", "sco_host_city"),
    SC_THRESHOLD,
    sco_features,
    # 2.5 needs the organisation named, or described with a host city's summit: that alone is 2
    (((*NAMED, "org_sco_acronym"),), (("org_sco_described",), ("sco_host_city",))),
)  # fmt: skip

SCORERS: dict[str, Scorer] = {s.name: s for s in (SCO, PUTIN_XI)}
