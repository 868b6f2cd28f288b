"""The rules sections of feeds.yaml as pydantic models: validation with errors that name the key
path. Kept apart from rules.py, which the fetch workers import without pydantic."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from digest.model.rules import parse_term


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RuleSpec(_Model):
    name: str | None = None
    any: tuple[str, ...] = ()
    all: tuple[str, ...] = ()
    none: tuple[str, ...] = ()


class RuleSetSpec(_Model):
    description: str = ""
    rules: tuple[RuleSpec, ...] = ()
    evidence: str | None = None  # a topic decided by an evidence score (select.SCORERS)
    threshold: float | None = None  # the score that selects; the score's own default if left out


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
                    if t.startswith("$"):
                        if t[1:] not in v:
                            raise ValueError(f"{name}.{lang}: {t!r} names an unknown list")
                        continue
                    try:
                        parse_term(t)
                    except ValueError as exc:
                        raise ValueError(f"{name}.{lang}: {exc}") from None
        return v
