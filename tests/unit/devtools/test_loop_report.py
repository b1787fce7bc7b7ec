"""What `make demo` and `make send` count as a loop that fell short: each stage that lost or
kept a message is named, so the command can exit non-zero saying where."""

from __future__ import annotations

from devtools.loop import LoopReport, problems


def complete(**changes: object) -> LoopReport:
    report = LoopReport(
        posted=13,
        accepted=12,
        refused=1,
        redeliveries=1,
        messages=[f"wamid.{n}" for n in range(8)],
        stored=8,
        published=8,
        classified=8,
        processed=7,
        failed=1,
        replies_sent=8,
        statuses_posted=3,
        statuses_applied=3,
        delivered=1,
        read=1,
        delivery_failed=1,
        dead_lettered=1,
    )
    for name, value in changes.items():
        setattr(report, name, value)
    return report


def test_a_complete_loop_has_no_problems():
    assert problems(complete()) == []
    assert problems(complete(processed=8, failed=0, delivery_failed=0, dead_lettered=0), failed_status=False) == []


def test_each_stage_that_fell_short_is_named():
    assert problems(complete(published=7)) == ["7 of 8 messages published"]
    assert problems(complete(classified=6)) == ["6 of 8 messages classified"]
    assert problems(complete(processed=6)) == ["7 of 8 runs ended"]
    assert problems(complete(replies_sent=7)) == ["7 of 8 replies sent to the Cloud API"]
    assert problems(complete(read=0)) == ["delivered 1, read 0, failed 1; 1, 1 and 1 expected"]
    assert problems(complete(refused=0)) == ["0 deliveries refused, 1 expected (the one with a wrong signature)"]
    assert problems(complete(dead_lettered=0)) == ["1 runs failed but 0 dead letters"]


def test_the_table_shows_every_stage():
    labels = [label.strip() for label, _ in complete().rows()]
    for stage in (
        "webhook deliveries POSTed",
        "accepted",
        "refused, bad signature",
        "requests published (relay)",
        "classified (classify)",
        "runs processed",
        "runs dead-lettered",
        "replies sent to the Cloud API",
        "replies delivered",
        "replies read",
        "replies failed",
    ):
        assert stage in labels
