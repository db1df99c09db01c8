"""A supervisor's count of its workers' calls: every call once, however its answer and the
worker's /healthz poll interleave.

The supervisor counts a new call the moment its answer passes through (so a burst of offers
spreads over the workers) and learns the worker's own count from a poll every half second. A
poll sent just before an answer may come back with the call already in it; counting the answer
on top would report one call twice until the next poll (a browser test caught /healthz saying 2
for one call on a loaded machine). The answer's registration number settles which it is.
"""

from __future__ import annotations

from voicegate.cluster.workers import Worker


def test_a_poll_that_already_counted_the_call_is_not_added_to() -> None:
    w = Worker(0)
    w.polled(sessions=1, registered=1)  # the poll's reply already has the new call
    w.call_answered(1)  # then its answer reaches the supervisor
    assert w.sessions == 1


def test_an_answer_before_the_poll_that_counts_it_counts_once() -> None:
    w = Worker(0)
    w.call_answered(1)
    assert w.sessions == 1  # counted at once, before any poll
    w.polled(sessions=0, registered=0)  # a poll that left before the call was registered
    assert w.sessions == 1
    w.polled(sessions=1, registered=1)  # the next one has it
    assert w.sessions == 1
    assert w.unseen == []


def test_calls_that_ended_between_polls_leave_the_count() -> None:
    w = Worker(0)
    for seq in (1, 2, 3):
        w.call_answered(seq)
    assert w.sessions == 3
    w.polled(sessions=2, registered=3)  # one of the three hung up already
    assert w.sessions == 2


def test_a_restarted_worker_numbers_its_calls_afresh() -> None:
    w = Worker(0)
    w.polled(sessions=4, registered=40)
    w.forget_calls()  # the process died; a new one starts from 0
    w.call_answered(1)
    assert w.sessions == 1


def test_without_a_registration_number_an_answer_counts_until_the_next_poll() -> None:
    w = Worker(0)
    w.call_answered(None)
    assert w.sessions == 1
    w.polled(sessions=1, registered=None)
    assert w.sessions == 1
