"""Subscribing from the web: double opt-in, the confirmation, unsubscribing, preferences.

    sign up:   store.list_subscribers(email) | a new address: a pending row; a known one: nothing
               written (its owner has not confirmed anything yet) | -> SignUp for the caller to
               mail (a confirmation link, or to the active: a link to their preferences)
    confirm:   the preferences asked for (signed into the link) | make_subscriber
               | store.confirm_subscriber (only if the row is as it was when the link was made)
    unsubscribe, save_preferences: one subscriber's row

Each call takes the caller's Store (the web app opens one for its lifetime) and is synchronous:
the web app runs it in a worker thread.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any, Literal

from digest.errors import SubscriberError
from digest.model.subscribers import PREFERENCE_FIELDS, Subscriber, make_subscriber, status_after_preferences
from digest.storage.store import Store


@dataclass(frozen=True, slots=True)
class SignUp:
    subscriber_id: int
    known: bool  # already active: they get a link to their preferences, not a confirmation
    stamp: datetime  # the row's updated_at: a confirmation link made now works while it is unchanged
    asked: dict[str, Any]  # the preferences asked for, to travel in the confirmation link
    # the address complained of our mail (an ARF report): it is never mailed again, not even a
    # confirmation; the page says what it says to anyone
    quiet: bool = False


def sign_up(store: Store, sub: Subscriber, now: datetime) -> SignUp:
    """Record a sign-up for `sub.email` -> what to mail to it."""
    existing = store.list_subscribers(email=sub.email)
    if existing and existing[0].status == "active":
        sid: int | None = existing[0].id
    elif existing:  # unsubscribed or pending: left as it is until its owner confirms
        sid = existing[0].id
    else:  # a new address gets a pending row (deleted if never confirmed: store.remove_expired_pending)
        sid, _ = store.add_subscriber(replace(sub, status="pending"), now, update=False)
    stamp = store.subscriber_stamp(sid) if sid is not None else None
    if sid is None or stamp is None:  # deleted between the two reads: housekeeping or the CLI
        raise SubscriberError(f"{sub.email}: the subscription changed while signing up; send the form again")
    asked = {k: v for k, v in asdict(sub).items() if k in (*PREFERENCE_FIELDS, "name")}
    status = existing[0].status if existing else None
    return SignUp(sid, status == "active", stamp, asked, quiet=status == "complained")


def sign_up_mail(list_name: str, email: str, link: str, *, known: bool) -> tuple[str, str]:
    """(subject, text) of the mail a sign-up sends. The subject is the same for new and known
    addresses, as is the page: neither tells a stranger whether an address is subscribed."""
    subject = f"Confirm your subscription to {list_name}"
    if known:
        return subject, (
            f"Someone (perhaps you) asked to subscribe {email} to {list_name}.\n\n"
            f"You are already subscribed. To change what you receive, open:\n{link}\n"
        )
    return subject, (
        f"Please confirm that {email} should receive {list_name}:\n\n{link}\n\n"
        "The link works for two days. If you did not ask for this, ignore this mail."
    )


Outcome = Literal["confirmed", "unknown", "invalid", "used"]


def confirm(
    store: Store, subscriber_id: int, stamp: datetime, asked: dict[str, Any], now: datetime
) -> tuple[Outcome, Subscriber | None]:
    """Activate a sign-up with the preferences its link carries. unknown: no such subscriber;
    invalid: the preferences do not validate; used: the row changed since the link was made (used
    already, or unsubscribed since: a replayed link must not undo that)."""
    sub = store.subscriber(subscriber_id)
    if sub is None:
        return "unknown", None
    try:
        wanted = make_subscriber({**asked, "email": sub.email}, where="confirmation link")
    except SubscriberError:
        return "invalid", sub
    if not store.confirm_subscriber(subscriber_id, stamp, wanted, now):
        return "used", sub
    return "confirmed", sub


def unsubscribe(store: Store, subscriber_id: int, now: datetime) -> None:
    """Idempotent: a second time changes nothing (not even updated_at)."""
    sub = store.subscriber(subscriber_id)
    # a complaint stays: it is the stronger "never again" (storage/bounces.py)
    if sub is not None and sub.status not in ("unsubscribed", "complained"):
        store.set_status(subscriber_id, "unsubscribed", now)


def save_preferences(
    store: Store, current: Subscriber, new: Subscriber, *, paused: bool, now: datetime
) -> Subscriber:
    """Store `new`'s preferences for `current` and pause or resume -> the row as saved."""
    assert current.id is not None
    store.save_preferences(current.id, new, now)
    status = status_after_preferences(current.status, paused)
    if status != current.status:
        store.set_status(current.id, status, now)
    return store.subscriber(current.id) or current
