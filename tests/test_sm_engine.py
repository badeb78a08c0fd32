"""The SMP request engine (sans-IO, driven with ``now``): its retransmission timeout follows the
round trips it measures, an answer that comes after its try timed out still completes the request,
the caller's own computing time does not time requests out, and its deadlines come out in order
whatever the timeouts were. And the SM driver's multicast programming: held during a sweep, then
done once; never more than a share of the SM's time."""

from __future__ import annotations

import random

import pytest

from fabric import wire as w
from fabric.sm.engine import MAX_RTO, RequestEngine


def _answer(smp) -> object:
    return smp.replace(method=w.GET_RESP, d=1)


def _engine(**kw) -> tuple:
    eng = RequestEngine(window=kw.pop("window", 4), timeout=kw.pop("timeout", 0.25), retries=kw.pop("retries", 3))
    results: list = []
    return eng, results


def _get(eng, results, n=1, attr=w.ATTR_NODE_INFO):
    for i in range(n):
        eng.dr_get(attr, (1, i + 1), lambda r, i=i: results.append((i, r)))


def test_a_late_answer_completes_the_request_and_withdraws_the_retry():
    eng, results = _engine()
    _get(eng, results)
    (first,) = eng.pump(0.0)
    (retry,) = eng.tick(0.3)  # timed out: sent again under a new TID
    assert retry.smp.tid != first.smp.tid and eng.timeouts == 1
    eng.on_response(_answer(first.smp), 0.35)  # the first try's answer, late
    assert [i for i, _ in results] == [0] and eng.late_answers == 1
    assert not eng.outstanding and eng.next_deadline() is None  # the retry no longer counts
    eng.on_response(_answer(retry.smp), 0.4)  # the retry's answer too: ignored
    assert len(results) == 1


def test_a_late_answer_to_a_queued_retry_keeps_it_from_being_sent():
    eng, results = _engine(window=1)
    _get(eng, results, n=2)
    (a,) = eng.pump(0.0)
    sent = eng.tick(0.3)  # a timed out; it goes to the front of the queue and is sent again
    assert [s.smp.attr_mod for s in sent] == [a.smp.attr_mod]
    eng.on_response(_answer(a.smp), 0.31)  # the old try's answer: done, and the next request goes
    assert [i for i, _ in results] == [0]
    assert len(eng.outstanding) == 1 and next(iter(eng.outstanding.values())).smp.initial_path[2] == 2


def test_the_timeout_follows_the_measured_round_trip():
    eng, results = _engine(window=1)
    assert eng.rto == 0.25  # nothing measured yet: the configured timeout
    now = 0.0
    for _ in range(30):  # every answer takes 0.6 s
        _get(eng, results)
        (s,) = eng.pump(now)
        now += 0.6
        eng.on_response(_answer(s.smp), now)
    assert eng.rto == pytest.approx(0.6, abs=0.05)
    _get(eng, results)
    (s,) = eng.pump(now)
    assert eng.tick(now + 0.5) == [] and eng.timeouts == 0  # 0.5 s is within the learned timeout
    for _ in range(40):  # answers get fast again: the timeout comes back to its floor
        eng.on_response(_answer(s.smp), now + 0.01)
        now += 0.01
        _get(eng, results)
        (s,) = eng.pump(now)
    assert eng.rto == pytest.approx(0.25)
    assert MAX_RTO >= eng.rto


def test_time_the_caller_spent_computing_moves_every_deadline():
    eng, results = _engine()
    _get(eng, results, n=3)
    eng.pump(0.0)
    eng.pause(1.0)  # e.g. routing took a second: the answers wait unread meanwhile
    assert eng.tick(0.5) == [] and eng.timeouts == 0
    assert eng.next_deadline() == pytest.approx(1.25)
    assert len(eng.tick(1.3)) == 3 and eng.timeouts == 3


def test_deadlines_come_out_in_order_and_failures_after_the_retries():
    rng = random.Random(5)
    eng, results = _engine(window=8, retries=1)
    _get(eng, results, n=20)
    now = 0.0
    outstanding = {s.smp.tid: s.smp for s in eng.pump(now)}
    while eng.busy:
        d = eng.next_deadline()
        assert d is not None and all(r.deadline >= d for r in eng.outstanding.values())
        # answer some before their deadline, at random; the rest time out
        for tid, smp in list(outstanding.items()):
            if rng.random() < 0.3 and tid in eng.outstanding:
                for s in eng.on_response(_answer(smp), now):
                    outstanding[s.smp.tid] = s.smp
        now = max(now, d) + 0.001
        for s in eng.tick(now):
            outstanding[s.smp.tid] = s.smp
    assert sorted(i for i, _ in results) == list(range(20))  # each finished exactly once
    assert eng.failed == sum(1 for _, r in results if r is None) and eng.failed > 0


# -- the SM driver's multicast programming ------------------------------------------------------


class _FakeSM:
    def __init__(self):
        self.state = "sweeping"
        self.programmed = 0
        self.subnet = None
        self.engine = RequestEngine()

    def program_mfts(self):
        self.programmed += 1

    def tick(self, now):
        return []

    def on_smp(self, mad, now):
        return self.engine.on_response(mad, now)

    def next_deadline(self):
        return None


def _driver():
    from fabric.sm.driver import SmAgent

    agent = SmAgent.__new__(SmAgent)  # the driver alone, around a stand-in for the SM core
    agent.sm = _FakeSM()
    agent.mft_due, agent.mft_last, agent.mft_cost, agent.mft_held = None, float("-inf"), 0.0, False
    agent.clock, agent._timing, agent._busy = None, False, False
    agent.last_up = None
    from collections import deque

    agent._pending, agent._held = deque(), deque()
    agent._mft_waiters, agent._replies = [], deque()
    agent.hca = None
    return agent


def test_joins_during_a_sweep_are_programmed_once_after_it():
    from fabric.sm.sa import McastChanged

    agent = _driver()
    for i in range(50):  # every port joins as the sweep activates it
        agent._run([McastChanged(0xC000)], 0.01 * i)
    assert agent.mft_held and agent.mft_due is None and agent.next_deadline() is None
    agent.sm.state = "up"
    agent._run([], 0.6)  # the sweep is over: what it held is due now
    assert not agent.mft_held and agent.mft_due == 0.6
    agent.tick(0.6)
    assert agent.sm.programmed == 1


def test_an_answer_that_changes_a_tree_waits_for_the_switches_to_have_it(monkeypatch):
    """A join that adds a branch is answered only once the MFT Sets of that branch are answered
    (the joined port sends to the group at once); answers that change no tree go at once, and a
    join that comes while the programming is in flight waits for the next one."""
    from fabric.sm.sa import McastChanged, Requester, SaReply

    agent = _driver()
    agent.sm.state = "up"
    sent = []
    monkeypatch.setattr(agent, "_gmp", lambda dest, mad, now: sent.append(mad))
    mft_sets = []

    def program_mfts():  # two MFT blocks to write, answered later
        agent.sm.programmed += 1
        for i in range(2):
            agent.sm.engine.request_octets(dr_octets(w.SET, w.ATTR_MFT, [1], bytes(64), attr_mod=i),
                                           lambda r: None)

    agent.sm.program_mfts = program_mfts
    monkeypatch.setattr(agent, "_do", lambda a, now: sent.append(a.mads[0]) if isinstance(a, SaReply)
                        else mft_sets.append(a) if isinstance(a, SendSmp) else agent.__class__._do(agent, a, now))
    req = Requester(lid=5)
    agent._run(agent._sa_actions([SaReply(req, (b"plain",))]), 1.0)
    assert sent == [b"plain"]  # no tree changed: answered at once
    agent._run(agent._sa_actions([SaReply(req, (b"join",)), McastChanged(0xC000)]), 1.0)
    assert sent == [b"plain"] and agent.mft_due == 1.0  # held; the change is due now
    agent.tick(1.0)
    assert agent.sm.programmed == 1 and len(mft_sets) == 2 and sent == [b"plain"]
    agent._run(agent._sa_actions([SaReply(req, (b"late join",)), McastChanged(0xC001)]), 1.001)
    first = mft_sets[0].smp
    agent.on_smp(None, _answer(first), 1, 1.002)
    assert sent == [b"plain"]  # one MFT Set still unanswered
    agent.on_smp(None, _answer(mft_sets[1].smp), 1, 1.003)
    assert sent == [b"plain", b"join"]  # the second join waits for the programming after it
    agent.tick(max(1.003, agent.mft_due))
    for s in mft_sets[2:]:
        agent.on_smp(None, _answer(s.smp), 1, 1.01)
    assert agent.sm.programmed == 2 and sent == [b"plain", b"join", b"late join"]


def test_held_answers_go_a_pass_at_a_time(monkeypatch):
    """Thousands of joins answered together after a sweep would overflow the in-process link
    toward the SM's switch: a released batch goes REPLIES_PER_PASS at a time, the rest at the next
    ticks, which are due at once while any wait."""
    from fabric.sm.driver import REPLIES_PER_PASS
    from fabric.sm.sa import Requester, SaReply

    agent = _driver()
    agent.sm.state = "up"
    sent = []
    monkeypatch.setattr(agent, "_gmp", lambda dest, mad, now: sent.append(mad))
    batch = [SaReply(Requester(lid=5), (i.to_bytes(2, "big"),)) for i in range(2 * REPLIES_PER_PASS + 3)]
    agent._release_mft_waiters(batch)
    agent._run([], 1.0)
    assert len(sent) == REPLIES_PER_PASS and agent.next_deadline() == 0.0
    agent.tick(1.0)
    assert len(sent) == 2 * REPLIES_PER_PASS and agent.next_deadline() == 0.0
    agent.tick(1.0)
    assert sent == [r.mads[0] for r in batch] and agent.next_deadline() is None  # in order, all


def test_tree_computing_takes_at_most_its_share_of_the_sms_time():
    from fabric.sm.driver import MFT_DUTY
    from fabric.sm.sa import McastChanged

    agent = _driver()
    agent.sm.state = "up"
    agent.mft_cost = 0.5  # the last programming took half a second (thousands of nodes)
    agent.mft_last = 10.0
    agent._run([McastChanged(0xC000)], 10.6)
    assert agent.mft_due == pytest.approx(10.0 + 0.5 / MFT_DUTY)


# -- requests as octets from a template -----------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fabric.sm.engine import SendSmp, dr_octets, dr_smp  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(method=st.sampled_from([w.GET, w.SET]), attr_id=st.integers(0, 0xFFFF),
       path=st.lists(st.integers(0, 255), max_size=63), attr_mod=st.integers(0, 0xFFFFFFFF),
       m_key=st.integers(0, (1 << 64) - 1), data=st.none() | st.binary(max_size=64))
def test_dr_octets_are_the_octets_of_dr_smp(method, attr_id, path, attr_mod, m_key, data):
    """The engine's requests, patched into a template, are what the object built field by field
    packs to (the attribute given as octets or as a struct)."""
    assert dr_octets(method, attr_id, path, data, attr_mod=attr_mod, m_key=m_key) == \
        dr_smp(method, attr_id, path, data, attr_mod=attr_mod, m_key=m_key).pack()
    pi = w.PortInfo(lid=len(path) + 1, port_state=4)
    assert dr_octets(method, attr_id, path, pi, attr_mod=attr_mod) == \
        dr_smp(method, attr_id, path, pi, attr_mod=attr_mod).pack()


def test_dr_octets_refuses_what_does_not_fit():
    with pytest.raises(ValueError):
        dr_octets(w.GET, w.ATTR_NODE_INFO, [1] * 64)
    with pytest.raises((OverflowError, ValueError)):
        dr_octets(w.GET, 0x10000, [1])
    with pytest.raises(ValueError):
        RequestEngine().request_octets(bytes(255), lambda r: None)


def test_a_request_goes_out_as_octets_with_its_tid_and_reads_back_as_the_smp():
    eng, results = _engine()
    eng.dr_set(w.ATTR_PORT_INFO, (1, 3), w.PortInfo(lid=7), lambda r: results.append(r), attr_mod=3)
    eng.request(dr_smp(w.GET, w.ATTR_SM_INFO, (2,)), lambda r: results.append(r))
    first, second = eng.pump(0.0)
    assert isinstance(first, SendSmp) and len(first.raw) == w.MAD_SIZE
    smp = first.smp  # parsed on first use, the try's TID in it
    assert (smp.method, smp.attr_id, smp.attr_mod, smp.hop_cnt, w.PortInfo.unpack(smp.data).lid) == \
        (w.SET, w.ATTR_PORT_INFO, 3, 2, 7)
    assert smp.tid in eng.outstanding and eng.outstanding[smp.tid].smp == smp
    assert second.smp.attr_id == w.ATTR_SM_INFO and second.smp.tid != smp.tid
    # the answer must carry the request's class, attribute and modifier
    eng.on_response(_answer(smp).replace(attr_mod=4), 0.01)
    assert results == [] and eng.mismatched == 1
    eng.on_response(_answer(smp), 0.01)
    assert len(results) == 1 and results[0].attr_mod == 3
