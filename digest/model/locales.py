"""The words around the news, in the reader's language: English, Russian, Chinese. Pure.

The stories stay in the language their outlets wrote them in; only the chrome (headings, dates,
counts, links, the footer) is translated. Which language a digest uses: `delivery.locale`, or with
`auto` (the default) the language most of the digest's headlines are written in, judged by their
script (Cyrillic: ru, Han: zh, else en). Subscribers have no language of their own yet (that would
need a schema change), and a reader of mostly Russian headlines reads Russian.

Plural rules follow CLDR (unicode.org/cldr/charts/latest/supplemental/language_plural_rules.html):
Russian has one/few/many, Chinese none. Dates follow CLDR's medium and full patterns for each.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime

LOCALES = ("en", "ru", "zh")

# fmt: off
_RU_MONTHS = ("января", "февраля", "марта", "апреля", "мая", "июня", "июля", "августа", "сентября",
              "октября", "ноября", "декабря")
_RU_MONTHS_SHORT = ("янв.", "февр.", "мар.", "апр.", "мая", "июн.", "июл.", "авг.", "сент.", "окт.",
                    "нояб.", "дек.")
_RU_DAYS = ("понедельник", "вторник", "среда", "четверг", "пятница", "суббота", "воскресенье")
_ZH_DAYS = ("星期一", "星期二", "星期三", "星期四", "星期五", "星期六", "星期日")
_EN_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
              "October", "November", "December")
_EN_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# fmt: on

_TOPICS = {
    "ru": {
        "sco": "Шанхайская организация сотрудничества",
        "putin-xi": "Путин и Си Цзиньпин",
        "other": "Другое",
    },
    "zh": {"sco": "上海合作组织", "putin-xi": "普京与习近平", "other": "其他"},
}


def _ru_plural(n: int, one: str, few: str, many: str) -> str:
    if n % 10 == 1 and n % 100 != 11:
        return one
    if 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14:
        return few
    return many


@dataclass(frozen=True, slots=True)
class Words:
    """One language's chrome. Methods, not format strings: plurals and word order differ."""

    code: str

    @property
    def html_lang(self) -> str:
        return {"zh": "zh-Hans"}.get(self.code, self.code)

    def stories(self, n: int) -> str:
        if self.code == "ru":
            return f"{n} {_ru_plural(n, 'новость', 'новости', 'новостей')}"
        if self.code == "zh":
            return f"{n} 条新闻"
        return f"{n} {'story' if n == 1 else 'stories'}"

    def day(self, d: date) -> str:
        """A daily digest's date, in full."""
        if self.code == "ru":
            return f"{_RU_DAYS[d.weekday()]}, {d.day} {_RU_MONTHS[d.month - 1]} {d.year}"
        if self.code == "zh":
            return f"{d.year}年{d.month}月{d.day}日 {_ZH_DAYS[d.weekday()]}"
        return f"{_EN_DAYS[d.weekday()]} {d.day} {_EN_MONTHS[d.month - 1]} {d.year}"

    def week(self, year: int, week: int) -> str:
        if self.code == "ru":
            return f"{week}-я неделя {year} года"
        if self.code == "zh":
            return f"{year}年第{week}周"
        return f"week {week}, {year}"

    def when(self, t: datetime) -> str:
        """A story's local time, short."""
        if self.code == "ru":
            return f"{t.day} {_RU_MONTHS_SHORT[t.month - 1]}, {t:%H:%M}"
        if self.code == "zh":
            return f"{t.month}月{t.day}日 {t:%H:%M}"
        return f"{t.day} {_EN_MONTHS[t.month - 1][:3]}, {t:%H:%M}"

    def topic(self, key: str, title: str) -> str:
        return _TOPICS.get(self.code, {}).get(key, title)

    def text(self, key: str) -> str:
        return _TEXT[key].get(self.code) or _TEXT[key]["en"]

    def more(self, n: int, cadence: str) -> str:
        """Stories the subscriber's own limit left out."""
        if self.code == "ru":
            period = {"weekly": "на этой неделе", "instant": "с прошлого письма"}.get(cadence, "сегодня")
            return f"…и ещё {self.stories(n)} {period}, сверх вашего лимита."
        if self.code == "zh":
            return f"……另有 {n} 条新闻超出您设定的数量。"
        period = {"weekly": "this week", "instant": "since the last mail"}.get(cadence, "today")
        return f"…and {self.stories(n)} more {period}, over your limit."

    def clipped(self, n: int) -> str:
        """Stories left out to keep the mail under the size mail clients clip at."""
        if self.code == "ru":
            return f"Ещё {self.stories(n)} — в веб-версии"
        if self.code == "zh":
            return f"另有 {n} 条新闻，请在网页版查看"
        return f"{n} more {'story' if n == 1 else 'stories'} in the archive"

    def footer(self, cadence: str, send_time: str, timezone: str, email: str) -> str:
        if cadence == "instant":
            if self.code == "ru":
                return f"Вы получаете новости по мере их появления на адрес {email}."
            if self.code == "zh":
                return f"您以 {email} 接收即时新闻提醒。"
            return f"You receive new stories as they happen, as {email}."
        if self.code == "ru":
            kind = "еженедельный" if cadence == "weekly" else "ежедневный"
            return f"Вы получаете {kind} дайджест в {send_time} ({timezone}) на адрес {email}."
        if self.code == "zh":
            kind = "每周" if cadence == "weekly" else "每日"
            return f"您在 {send_time}（{timezone}）以 {email} 接收{kind}摘要。"
        return f"You receive this {cadence} digest at {send_time} ({timezone}) as {email}."


_TEXT: dict[str, dict[str, str]] = {
    "view_in_browser": {"en": "View in browser", "ru": "Открыть в браузере", "zh": "在浏览器中查看"},
    "also": {"en": "Also reported by", "ru": "Также пишут", "zh": "其他报道"},
    "why": {"en": "Why", "ru": "Почему", "zh": "入选原因"},
    "preferences": {"en": "Change preferences", "ru": "Настройки", "zh": "更改设置"},
    "unsubscribe": {"en": "Unsubscribe", "ru": "Отписаться", "zh": "退订"},
    "in_this_issue": {"en": "In this issue", "ru": "В выпуске", "zh": "本期"},
    "empty": {"en": "Nothing new this time.", "ru": "Новых материалов нет.", "zh": "本期没有新内容。"},
}


def script_language(text: str) -> str:
    """en, ru or zh by the letters `text` is written in (Han counts thrice: one says a word)."""
    han = cyr = lat = 0
    for c in text:
        if "\u4e00" <= c <= "\u9fff":
            han += 1
        elif "\u0400" <= c <= "\u04ff":
            cyr += 1
        elif c.isascii() and c.isalpha():
            lat += 1
    best = max((han * 3, "zh"), (cyr, "ru"), (lat, "en"))
    return best[1] if best[0] else "en"


def words_for(setting: str, headlines: Iterable[str]) -> Words:
    """The chrome for a digest: the configured locale, or (auto) its headlines' language."""
    if setting in LOCALES:
        return Words(setting)
    votes: dict[str, int] = {}
    for h in headlines:
        lang = script_language(h)
        votes[lang] = votes.get(lang, 0) + 1
    if not votes:
        return Words("en")
    top = max(votes.values())
    # a tie reads in English: the one language every reader of a mixed digest was offered
    winners = [lang for lang, n in votes.items() if n == top]
    return Words(winners[0] if len(winners) == 1 else "en")
