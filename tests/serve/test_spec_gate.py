"""SpecGate: speculate only when the rows' acceptance so far predicts more tokens per second than decoding."""

from __future__ import annotations

from types import SimpleNamespace

from swiftkit.serve.engine.spec import PROBE_EVERY, SpecGate


def test_the_gate_follows_measured_cost_and_acceptance():
    gate = SpecGate()
    row = SimpleNamespace(spec_rate=1.0)
    draft = [[7, 8, 9, 10]]
    assert gate.wants([row], draft)  # nothing measured yet: try
    gate.decoded(0.010)
    gate.verified(0.020, [row], draft, [0])  # a verify costs two decode steps; nothing accepted
    for _ in range(3):  # acceptance keeps failing: the row's rate falls ...
        gate.verified(0.020, [row], draft, [0])
    assert row.spec_rate < 0.25
    declined = 0
    while not gate.wants([row], draft):  # ... so decoding wins, until the periodic probe
        declined += 1
    assert declined == PROBE_EVERY
    for _ in range(6):  # the text turned repetitive: every draft token accepted
        gate.verified(0.020, [row], draft, [4])
    assert gate.wants([row], draft)  # 1 + 4 x rate tokens for 2 steps' time


def test_a_cheap_verify_pays_even_with_little_acceptance():
    gate = SpecGate()
    row = SimpleNamespace(spec_rate=0.1)
    gate.decoded(0.010)
    gate.verified(0.011, [row], [[1, 2, 3, 4]], [0])  # a GPU-like verify: about one step
    assert gate.wants([row], [[1, 2, 3, 4]])  # 1 + 4 x 0.07 tokens for 1.1 steps
