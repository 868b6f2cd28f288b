"""The rules sections of feeds.yaml (`terms:`, `topics:`, `tags:`), declared once, as pydantic
models: validation whose errors name the key path. rules.compile_rules reads them; each term's
own syntax is checked there, where terms are parsed."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RuleSpec(_Model):
    name: str | None = None
    any: tuple[str, ...] = ()
    all: tuple[str, ...] = ()
    none: tuple[str, ...] = ()
    unless: tuple[str, ...] = ()  # tags: this rule does not count when one of these tags is given


class RuleSetSpec(_Model):
    description: str = ""
    rules: tuple[RuleSpec, ...] = ()
    evidence: str | None = None  # a topic decided by an evidence score (evidence.SCORERS)
    threshold: float | None = None  # the score that selects; the score's own default if left out
    # tags: this tag is not given when one of these is ("below summit level": unless summit)
    unless: tuple[str, ...] = ()


class RulesSpec(_Model):
    terms: dict[str, dict[str, tuple[str, ...]] | tuple[str, ...]] = {}
    topics: dict[str, RuleSetSpec] = {}
    tags: dict[str, RuleSetSpec] = {}

    @field_validator("terms")
    @classmethod
    def _terms(cls, v: dict[str, Any]) -> dict[str, Any]:
        for name, value in v.items():
            if not re.fullmatch(r"[a-z0-9_]+", name):
                raise ValueError(f"list name {name!r}: use lower-case letters, digits and _")
            langs = value if isinstance(value, dict) else {"any": value}
            for lang, terms in langs.items():
                for t in terms:
                    if t.startswith("$") and t[1:] not in v:
                        raise ValueError(f"{name}.{lang}: {t!r} names an unknown list")
        return v
