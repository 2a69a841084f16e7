"""SpecGate: speculate only when the rows' acceptance so far predicts more tokens per second than decoding."""

from __future__ import annotations

from types import SimpleNamespace

from swiftkit.serve.engine.spec import MAX_BACKOFF, PROBE_EVERY, SpecGate


def test_the_gate_follows_measured_cost_and_acceptance():
    gate = SpecGate()
    row = SimpleNamespace(spec_rate=1.0)
    draft = [[7, 8, 9, 10]]
    assert not gate.wants([row], draft)  # nothing measured yet: a decode step first ...
    gate.decoded(0.010)
    assert gate.wants([row], draft)  # ... then a verify
    gate.verified(0.020, [row], draft, [0])  # a verify costs two decode steps; nothing accepted
    for _ in range(3):  # acceptance keeps failing: the row's rate falls ...
        gate.verified(0.020, [row], draft, [0])
    assert row.spec_rate < 0.25
    declined = 0
    while not gate.wants([row], draft):  # ... so decoding wins, until the periodic probe
        declined += 1
    assert declined == PROBE_EVERY
    gate.verified(0.020, [row], draft, [0])  # the probe accepted nothing: the next one waits twice as long
    declined = 0
    while not gate.wants([row], draft):
        declined += 1
    assert declined == 2 * PROBE_EVERY
    for _ in range(6):  # the text turned repetitive: every draft token accepted
        gate.verified(0.020, [row], draft, [4])
    assert gate.wants([row], draft)  # 1 + 4 x rate tokens for 2 steps' time


def test_a_cheap_verify_pays_even_with_little_acceptance():
    gate = SpecGate()
    row = SimpleNamespace(spec_rate=0.1)
    gate.decoded(0.010)
    gate.verified(0.011, [row], [[1, 2, 3, 4]], [0])  # a GPU-like verify: about one step
    assert gate.wants([row], [[1, 2, 3, 4]])  # 1 + 4 x 0.07 tokens for 1.1 steps


def test_failed_probes_back_off_and_an_accepted_draft_resets():
    gate = SpecGate()
    row = SimpleNamespace(spec_rate=0.0)
    draft = [[1, 2, 3, 4]]
    gate.decoded(0.010)
    gate.verified(0.020, [row], draft, [0])
    waits = []
    for _ in range(5):
        waited = 0
        while not gate.wants([row], draft):
            waited += 1
        waits.append(waited)
        gate.verified(0.020, [row], draft, [0])
    assert waits == [PROBE_EVERY * b for b in (1, 2, 4, MAX_BACKOFF, MAX_BACKOFF)]
    gate.verified(0.020, [row], draft, [3])
    assert gate.backoff == 1
