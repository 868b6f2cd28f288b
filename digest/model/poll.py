"""Pure decisions about polling: which feeds to fetch now, and a feed's state after a fetch.

No I/O: given the old state, the clock and the outcome, return the new state (the "Decider"
of lemon24/reader). Failing feeds back off exponentially; Retry-After is honoured.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from digest.model.records import FeedState, FetchResult, FetchStatus, ParsedFeed


def held_back(state: FeedState, now: datetime) -> bool:
    """A failing feed (or one that asked us to wait) whose next attempt is still in the future."""
    return state.error_count > 0 and state.next_poll is not None and state.next_poll > now


def is_due(state: FeedState, now: datetime) -> bool:
    return state.next_poll is None or state.next_poll <= now


def backoff(error_count: int, interval: float, max_backoff: float) -> float:
    """interval, 2×, 4×, … capped: the wait after the `error_count`-th failure in a row."""
    return min(max_backoff, interval * 2.0 ** max(0, error_count - 1))


def next_state(
    state: FeedState,
    result: FetchResult,
    parsed: ParsedFeed | None,
    now: datetime,
    *,
    interval: float,
    max_backoff: float,
    body_hash: str | None = None,
    jitter: float = 0.0,
) -> FeedState:
    """The feed's state after `result` (and, for a new body, its parse). `jitter` in [0, 1)."""
    failed = result.status is FetchStatus.FAILED or (parsed is not None and parsed.error is not None)
    spread = 1.0 + 0.1 * jitter  # so feeds added together do not stay in lock-step
    moved = result.permanent_url if result.permanent_url and result.permanent_url != state.url else None
    base = replace(state, last_fetched=now, fetch_url=moved or state.fetch_url)
    if failed:
        errors = state.error_count + 1
        delay = backoff(errors, interval, max_backoff)
        if result.retry_after is not None:
            delay = max(delay, result.retry_after)
        # keep etag, last-modified and body hash: the last good data stays the reference
        error = result.error or (parsed.error if parsed else None) or "unknown error"
        return replace(
            base,
            status=FetchStatus.FAILED.value,
            last_error=error,
            error_count=errors,
            next_poll=now + timedelta(seconds=delay * spread),
        )
    # a 304, or a 200 whose body hash matched (so it was not parsed): nothing new
    status = FetchStatus.OK if parsed is not None else FetchStatus.NOT_MODIFIED
    new = replace(
        base,
        status=status.value,
        last_error=None,
        error_count=0,
        last_ok=now,
        next_poll=now + timedelta(seconds=interval * spread),
    )
    if result.status is FetchStatus.OK:
        # validators from a 200 only; a server that drops them resets ours (RFC 9110 §13.1)
        new = replace(
            new, etag=result.etag, last_modified=result.last_modified, body_hash=body_hash or state.body_hash
        )
    if parsed is not None and parsed.title:
        new = replace(new, title=parsed.title)
    return new
