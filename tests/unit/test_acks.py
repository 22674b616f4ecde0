"""The ack contract (walstream.delivery.acks), on its own."""

from __future__ import annotations

import random

import pytest

from walstream.delivery import acks
from walstream.delivery.acks import AckTracker, ClientLedger


def deliver_txn(tracker, clients, xid, commit_lsn, lsns, end_lsn):
    txn = tracker.begin(xid, commit_lsn)
    for lsn in lsns:
        for c in clients:
            tracker.deliver(c, lsn, txn, f"{xid}@{lsn:X}")
    tracker.commit(txn, end_lsn)
    return txn


def test_ack_matches_oldest_pending_delivery_with_that_lsn_and_everything_before():
    t: AckTracker[str] = AckTracker()
    c = ClientLedger[str]("c")
    deliver_txn(t, [c], 1, 100, [10, 10, 10], 110)  # COPY: three rows share an LSN
    assert t.ack(c, 10) == 1
    assert t.confirmed_lsn == 0
    assert t.ack(c, 10) == 1
    assert t.ack(c, 10) == 1
    assert t.confirmed_lsn == 110
    assert t.ack(c, 10) == 0  # nothing pending with that LSN any more
    assert c.rejected == 1


def test_non_monotonic_lsns_across_transactions():
    t: AckTracker[str] = AckTracker()
    c = ClientLedger[str]("c")
    deliver_txn(t, [c], 2, 300, [250], 310)  # committed first, started later
    deliver_txn(t, [c], 1, 400, [50, 60], 410)  # started earlier: smaller change LSNs
    assert t.ack(c, 50) == 2  # acks 250 too: it was delivered before
    assert t.confirmed_lsn == 310
    assert t.ack(c, 60) == 1
    assert t.confirmed_lsn == 410


def test_unknown_and_backward_acks_move_nothing():
    t: AckTracker[str] = AckTracker()
    c = ClientLedger[str]("c")
    deliver_txn(t, [c], 1, 100, [10, 20], 110)
    assert t.ack(c, 999) == 0
    assert t.ack(c, 0) == 0
    assert t.ack(c, 2**64 - 1) == 0
    assert t.confirmed_lsn == 0
    assert t.ack(c, 20) == 2
    assert t.ack(c, 10) == 0  # backwards
    assert t.confirmed_lsn == 110
    assert c.rejected == 4


def test_transaction_waits_for_every_client_it_went_to():
    t: AckTracker[str] = AckTracker()
    a, b = ClientLedger[str]("a"), ClientLedger[str]("b")
    deliver_txn(t, [a, b], 1, 100, [10], 110)
    deliver_txn(t, [a, b], 2, 200, [150], 210)
    t.ack(a, 150)
    assert t.confirmed_lsn == 0
    t.ack(b, 10)
    assert t.confirmed_lsn == 110
    t.ack(b, 150)
    assert t.confirmed_lsn == 210


def test_open_transaction_holds_the_position_until_its_commit():
    t: AckTracker[str] = AckTracker()
    c = ClientLedger[str]("c")
    txn = t.begin(1, 100)
    t.deliver(c, 10, txn, "x")
    t.ack(c, 10)
    assert t.confirmed_lsn == 0
    t.commit(txn, 110)
    assert t.confirmed_lsn == 110


def test_leaving_client_stops_holding_others_back():
    t: AckTracker[str] = AckTracker()
    a, b = ClientLedger[str]("a"), ClientLedger[str]("b")
    deliver_txn(t, [a, b], 1, 100, [10], 110)
    t.ack(a, 10)
    t.client_left(b, last=False)
    assert t.confirmed_lsn == 110
    assert t.outstanding == 0


def test_last_client_leaving_keeps_its_unacked_deliveries_for_the_next():
    t: AckTracker[str] = AckTracker()
    a = ClientLedger[str]("a")
    deliver_txn(t, [a], 1, 100, [10, 20, 30], 110)
    t.ack(a, 10)
    t.client_left(a, last=True)
    assert t.has_orphans
    assert not t.idle_advance(10_000)  # orphans hold the slot
    b = ClientLedger[str]("b")
    assert t.adopt_orphans(b, lambda event: [(0, "never: same API")]) == ["1@14", "1@1E"]
    assert t.confirmed_lsn == 0
    t.ack(b, 30)
    assert t.confirmed_lsn == 110


def test_idle_advance_only_when_nothing_is_open_or_pending():
    t: AckTracker[str] = AckTracker(confirmed_lsn=50)
    c = ClientLedger[str]("c")
    assert t.idle_advance(40) is False  # never backwards
    assert t.idle_advance(60) and t.confirmed_lsn == 60
    assert not t.in_transaction
    txn = t.begin(1, 100)
    assert t.in_transaction
    assert t.idle_advance(90) is False
    t.commit(txn, 110)  # no deliveries: done at once
    assert t.confirmed_lsn == 110 and not t.in_transaction
    deliver_txn(t, [c], 2, 200, [150], 210)
    assert not t.in_transaction  # committed, though not acknowledged yet
    assert t.idle_advance(500) is False
    t.ack(c, 150)
    assert t.idle_advance(500) and t.confirmed_lsn == 500


def test_idle_advance_waits_for_an_unacknowledged_message_outside_transactions():
    """A non-transactional logical message belongs to no transaction, yet it holds the slot until acked."""
    t: AckTracker[str] = AckTracker(confirmed_lsn=50)
    c = ClientLedger[str]("c")
    t.deliver(c, 70, None, "message@70")
    assert t.idle_advance(500) is False and t.confirmed_lsn == 50
    t.ack(c, 70)
    assert t.idle_advance(500) and t.confirmed_lsn == 500


def test_random_histories_never_confirm_an_unacked_transaction():
    rng = random.Random(7)
    for _ in range(300):
        t: AckTracker[int] = AckTracker()
        clients = [ClientLedger[int](str(i)) for i in range(rng.randint(1, 3))]
        txns = []
        lsn = 1000
        for xid in range(rng.randint(1, 6)):
            commit = lsn + 100
            lsns = [rng.randint(10, lsn) for _ in range(rng.randint(0, 4))]
            txns.append((deliver_txn(t, clients, xid, commit, lsns, commit + 8), lsns))
            lsn = commit + 8
        for _ in range(rng.randint(0, 20)):
            c = rng.choice(clients)
            pending = [d.lsn for d in c.pending]
            t.ack(c, rng.choice(pending) if pending and rng.random() < 0.8 else rng.randint(0, 3000))
        # Confirmed position: the end of the newest transaction with only fully acked ones before it.
        expected = 0
        for txn, _ in txns:
            if txn.outstanding:
                break
            expected = txn.end_lsn
        assert t.confirmed_lsn == expected
        assert t.outstanding == sum(len(c.pending) for c in clients)


def test_orphans_handed_to_another_api_are_re_expanded_from_their_events():
    t: AckTracker[str] = AckTracker()
    seed = ClientLedger[str]("seed", "seed")
    txn = t.begin(1, 100)
    t.deliver(seed, 10, txn, "seed-insert", event="INSERT")
    for table in ("a", "b", "c"):  # one TRUNCATE event, one seed message per table
        t.deliver(seed, 20, txn, f"seed-truncate-{table}", event="TRUNCATE")
    t.deliver(seed, 30, txn, "seed-update", event="UPDATE")
    t.commit(txn, 110)
    t.ack(seed, 20)  # the INSERT and the first TRUNCATE message
    t.client_left(seed, last=True)

    v1 = ClientLedger[str]("v1", "v1")
    expanded = t.adopt_orphans(v1, lambda event: [] if event == "UPDATE" else [(20, f"v1-{event}")])
    assert expanded == ["v1-TRUNCATE"]  # the partly acked TRUNCATE goes whole; the filtered UPDATE not
    assert t.outstanding == 1
    assert t.confirmed_lsn == 0
    t.ack(v1, 20)
    assert t.confirmed_lsn == 110


def test_orphans_filtered_out_entirely_release_the_slot():
    t: AckTracker[str] = AckTracker()
    seed = ClientLedger[str]("seed", "seed")
    txn = t.begin(1, 100)
    t.deliver(seed, 10, txn, "seed-insert", event="INSERT")
    t.commit(txn, 110)
    t.client_left(seed, last=True)
    assert t.adopt_orphans(ClientLedger[str]("v1", "v1"), lambda event: []) == []
    assert t.confirmed_lsn == 110 and t.outstanding == 0


def test_long_random_histories_match_a_model_of_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many deliveries per client, non-transactional ones among them, and ledgers compacted often: the
    tracker agrees with a plain model of the contract after every ack."""
    monkeypatch.setattr(acks, "COMPACT_AT", 3)
    rng = random.Random(11)
    for _ in range(100):
        t: AckTracker[int] = AckTracker()
        clients = [ClientLedger[int](str(i)) for i in range(rng.randint(1, 3))]
        model: dict[str, list[tuple[int, object]]] = {c.name: [] for c in clients}  # (lsn, txn) pending
        txns = []
        lsn = 1000
        for xid in range(rng.randint(1, 12)):
            if rng.random() < 0.3:  # a non-transactional message between transactions
                for c in clients:
                    t.deliver(c, lsn + 1, None, lsn + 1)
                    model[c.name].append((lsn + 1, None))
            commit = lsn + 100
            txn = t.begin(xid, commit)
            for _ in range(rng.randint(0, 8)):
                change = rng.randint(lsn, commit)
                for c in clients:
                    t.deliver(c, change, txn, change)
                    model[c.name].append((change, txn))
            t.commit(txn, commit + 8)
            txns.append(txn)
            lsn = commit + 8
        for _ in range(rng.randint(0, 30)):
            c = rng.choice(clients)
            pending = model[c.name]
            target = rng.choice(pending)[0] if pending and rng.random() < 0.85 else rng.randint(0, 3000)
            index = next((i for i, (lsn_, _) in enumerate(pending) if lsn_ == target), None)
            assert t.ack(c, target) == (0 if index is None else index + 1)
            if index is not None:
                del pending[:index + 1]
            assert [d.lsn for d in c.pending] == [lsn_ for lsn_, _ in pending]
            for txn in txns:
                assert txn.outstanding == sum(1 for p in model.values() for _, x in p if x is txn)
            expected = 0
            for txn in txns:
                if any(x is txn for p in model.values() for _, x in p):
                    break
                expected = txn.end_lsn or 0
            assert t.confirmed_lsn == expected
        assert t.outstanding == sum(len(p) for p in model.values())
