"""store/reviews.py: the review queue's one writer, on Postgres and on the embedded SQLite.

An item is open until an operator resolves it; one subject is open at most once, whatever the
reason (the store ignores a second, the schema refuses it), and a reason is a known code; a
resolution is a compare-and-set, kept with who and why; resolved items stay. A report reads the
open item locked, so a resolve that commits meanwhile is seen.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import exc, insert, text

from orderpay import clock
from orderpay.domain.reviews import ReviewReason
from orderpay.errors import ReviewItemNotFound, ReviewItemResolved
from orderpay.payments import review
from orderpay.payments.review import Kept
from orderpay.store import reviews
from orderpay.store.db import Database
from orderpay.store.paging import Window
from orderpay.store.schema import review_items
from tests.builders import an_order
from tests.conftest import count_rows
from tests.redis_helpers import wait_until

REASON = "outcome_conflict"


def open_one(
    db: Database, order_id: uuid.UUID, *, subject: str = "payment:1", reason: str = REASON
) -> int | None:
    with db.transaction() as conn:
        return reviews.open_item(
            conn,
            reason=reason,
            subject=subject,
            order_id=order_id,
            reported="momo callback: succeeded",
            suggested_action="refund 25.00 GHS",
        )


def resolve(db: Database, item_id: int, operator: str = "akosua", note: str = "refunded") -> None:
    with db.transaction() as conn:
        reviews.resolve_item(conn, item_id, operator=operator, note=note)


def get(db: Database, item_id: int) -> reviews.ReviewItem:
    with db.transaction() as conn:
        return reviews.get_item(conn, item_id)


def test_opening_an_item_keeps_what_it_was_given_and_leaves_it_open(any_db: Database) -> None:
    order = an_order(any_db)

    item_id = open_one(any_db, order.id, subject="payment:abc")

    assert item_id is not None
    item = get(any_db, item_id)
    assert (item.reason, item.subject, item.order_id) == (REASON, "payment:abc", order.id)
    assert (item.reported, item.suggested_action) == (
        "momo callback: succeeded",
        "refund 25.00 GHS",
    )
    assert item.is_open
    assert (item.resolved_at, item.resolved_by, item.note) == (None, None, None)


def test_the_same_reason_and_subject_is_not_opened_twice_while_open(any_db: Database) -> None:
    order = an_order(any_db)
    first = open_one(any_db, order.id)

    again = open_one(any_db, order.id)

    assert first is not None
    assert again is None
    with any_db.transaction() as conn:
        assert reviews.count_open(conn) == 1


def test_another_reason_about_an_open_subject_opens_no_second_item(any_db: Database) -> None:
    order = an_order(any_db)
    first = open_one(any_db, order.id, reason="outcome_conflict")
    assert first is not None

    other = open_one(any_db, order.id, reason="amount_mismatch")

    assert other is None
    with any_db.transaction() as conn:
        assert reviews.count_open(conn) == 1
    assert get(any_db, first).reason == "outcome_conflict"


def insert_raw(db: Database, order_id: uuid.UUID, *, reason: str, subject: str) -> None:
    """An item written past the store, as a bug or a hand-written statement would."""
    with db.transaction() as conn:
        conn.execute(
            insert(review_items).values(
                reason=reason,
                subject=subject,
                order_id=order_id,
                reported="r",
                suggested_action="a",
                opened_at=clock.utcnow(),
            )
        )


def test_the_schema_refuses_a_second_open_item_about_one_subject_whatever_its_reason(
    any_db: Database,
) -> None:
    order = an_order(any_db)
    open_one(any_db, order.id, subject="payment:1", reason="outcome_conflict")
    before = count_rows(any_db)

    with pytest.raises(exc.IntegrityError):
        insert_raw(any_db, order.id, reason="amount_mismatch", subject="payment:1")

    assert count_rows(any_db) == before


def test_the_schema_refuses_an_unknown_reason(any_db: Database) -> None:
    order = an_order(any_db)
    before = count_rows(any_db)

    with pytest.raises(exc.IntegrityError):
        insert_raw(any_db, order.id, reason="made_up_reason", subject="payment:1")

    assert count_rows(any_db) == before


def test_the_schema_takes_every_known_reason(any_db: Database) -> None:
    """The migration's list of reasons is the code's: a reason added to ReviewReason without
    a migration fails here."""
    order = an_order(any_db)

    for n, reason in enumerate(ReviewReason):
        insert_raw(any_db, order.id, reason=reason.value, subject=f"payment:{n}")

    with any_db.transaction() as conn:
        assert reviews.count_open(conn) == len(ReviewReason)


def test_once_resolved_the_same_finding_opens_a_new_item(any_db: Database) -> None:
    order = an_order(any_db)
    first = open_one(any_db, order.id)
    assert first is not None
    resolve(any_db, first)

    second = open_one(any_db, order.id)

    assert second is not None
    assert second != first
    assert not get(any_db, first).is_open
    assert get(any_db, second).is_open


def test_resolving_keeps_who_when_and_why(any_db: Database) -> None:
    order = an_order(any_db)
    item_id = open_one(any_db, order.id)
    assert item_id is not None
    clock.advance(timedelta(seconds=90))

    with any_db.transaction() as conn:
        resolved = reviews.resolve_item(conn, item_id, operator="akosua", note="refunded by MoMo")

    assert (resolved.resolved_by, resolved.note) == ("akosua", "refunded by MoMo")
    assert resolved.resolved_at is not None
    assert (resolved.resolved_at - resolved.opened_at).total_seconds() >= 90
    assert get(any_db, item_id) == resolved


def test_resolving_twice_is_refused_and_keeps_the_first_resolution(any_db: Database) -> None:
    order = an_order(any_db)
    item_id = open_one(any_db, order.id)
    assert item_id is not None
    resolve(any_db, item_id, operator="akosua", note="refunded")
    before = get(any_db, item_id)

    with pytest.raises(ReviewItemResolved) as refused:
        resolve(any_db, item_id, operator="kofi", note="again")

    assert "akosua" in refused.value.message
    assert get(any_db, item_id) == before


def test_an_unknown_item_is_not_found_for_reading_and_resolving(any_db: Database) -> None:
    before = count_rows(any_db)

    with pytest.raises(ReviewItemNotFound):
        get(any_db, 999)
    with pytest.raises(ReviewItemNotFound):
        resolve(any_db, 999)

    assert count_rows(any_db) == before


def test_open_item_about_finds_the_open_item_of_a_subject_whatever_its_reason(
    any_db: Database,
) -> None:
    order = an_order(any_db)
    item_id = open_one(any_db, order.id, subject="payment:x", reason="success_after_cancel")

    with any_db.transaction() as conn:
        found = reviews.open_item_about(conn, "payment:x")
        other = reviews.open_item_about(conn, "payment:y")

    assert found is not None
    assert found.id == item_id
    assert other is None


def test_open_item_about_ignores_resolved_items(any_db: Database) -> None:
    order = an_order(any_db)
    item_id = open_one(any_db, order.id, subject="payment:x")
    assert item_id is not None
    resolve(any_db, item_id)

    with any_db.transaction() as conn:
        assert reviews.open_item_about(conn, "payment:x") is None


def test_the_list_shows_open_items_newest_first_and_all_of_them_on_request(
    any_db: Database,
) -> None:
    order = an_order(any_db)
    ids = []
    for n in range(3):
        ids.append(open_one(any_db, order.id, subject=f"payment:{n}"))
        clock.advance(timedelta(seconds=1))
    resolve(any_db, ids[0])  # type: ignore[arg-type]

    with any_db.transaction() as conn:
        still_open = reviews.list_items(conn, Window(), open_only=True)
        everything = reviews.list_items(conn, Window(), open_only=False)
        waiting = reviews.count_open(conn)

    assert [i.id for i in still_open.items] == [ids[2], ids[1]]
    assert [i.id for i in everything.items] == [ids[2], ids[1], ids[0]]
    assert waiting == 2


def test_the_list_pages_with_a_cursor_without_repeating_an_item(any_db: Database) -> None:
    order = an_order(any_db)
    for n in range(5):
        open_one(any_db, order.id, subject=f"payment:{n}")

    seen: list[int] = []
    after = None
    with any_db.transaction() as conn:
        while True:
            page = reviews.list_items(conn, Window(limit=2, after=after), open_only=True)
            seen.extend(i.id for i in page.items)
            if page.next is None:
                break
            after = page.next

    assert len(seen) == 5
    assert len(set(seen)) == 5


def test_the_list_keeps_to_the_order_asked_for(any_db: Database) -> None:
    mine, other = an_order(any_db), an_order(any_db)
    kept = open_one(any_db, mine.id, subject="payment:a")
    open_one(any_db, other.id, subject="payment:b")

    with any_db.transaction() as conn:
        listed = reviews.list_items(conn, Window(), open_only=False, order_id=mine.id)

    assert [i.id for i in listed.items] == [kept]


def test_parallel_openings_of_one_finding_make_one_item(db: Database) -> None:
    """Postgres: the partial unique index decides between transactions that both found no
    open item (each opens in its own transaction, all at once)."""
    order = an_order(db)
    barrier = threading.Barrier(6)
    opened: list[int | None] = []
    errors: list[BaseException] = []

    def attempt() -> None:
        try:
            with db.transaction() as conn:
                barrier.wait(10)
                opened.append(
                    reviews.open_item(
                        conn,
                        reason=REASON,
                        subject="payment:race",
                        order_id=order.id,
                        reported="r",
                        suggested_action="a",
                    )
                )
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=attempt) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert errors == []
    assert len([i for i in opened if i is not None]) == 1
    assert opened.count(None) == 5
    with db.transaction() as conn:
        assert reviews.count_open(conn) == 1


def sessions_waiting_on_a_lock(db: Database) -> int:
    with db.engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
        )


@pytest.fixture
def other(db: Database) -> Iterator[Database]:
    """A second engine on the same Postgres database: the report's own connection."""
    second = Database(db.url)
    yield second
    second.dispose()


def test_a_report_waiting_on_a_resolve_in_flight_opens_a_new_item_once_it_commits(
    db: Database, other: Database
) -> None:
    """Postgres: the report reads the open item FOR UPDATE, so it waits for the resolve that
    holds the item, reads it again once that commits, and opens a new item rather than attach
    itself to the resolved one."""
    order = an_order(db)
    first = open_one(db, order.id, subject="payment:race")
    assert first is not None
    kept: list[Kept | BaseException] = []

    def report() -> None:
        try:
            with other.transaction() as conn:
                again = review.keep(
                    conn,
                    reason=ReviewReason.OUTCOME_CONFLICT,
                    subject="payment:race",
                    order_id=order.id,
                    reported="again",
                    action="a",
                )
            kept.append(again)
        except BaseException as error:
            kept.append(error)

    with db.transaction() as resolving:
        reviews.resolve_item(resolving, first, operator="akosua", note="refunded")
        reporter = threading.Thread(target=report)
        reporter.start()
        # Without the lock the report does not wait: it is done before the resolve commits.
        wait_until(lambda: kept or sessions_waiting_on_a_lock(db) == 1, what="the report to wait")
    reporter.join(30)

    (result,) = kept
    assert isinstance(result, Kept), result
    assert result.opened
    assert result.item_id != first
    assert not get(db, first).is_open
    assert get(db, result.item_id).is_open
