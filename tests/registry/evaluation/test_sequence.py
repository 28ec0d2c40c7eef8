"""SeqSLAM-style sequence matching against brute-force loops, and on a synthetic route where single frames fail."""
import numpy as np
import pytest

from registry.evaluation.recall import recall_from_predictions
from registry.evaluation.sequence import (
    SequenceMatcher,
    SequenceSpec,
    contrast_normalise,
    distance_column,
    sequence_rankings,
    sequence_scores,
)


def test_contrast_normalise_matches_explicit_windows():
    d = np.random.default_rng(0).normal(size=37)
    for window in (1, 4, 10, 50):
        got = contrast_normalise(d, window)
        for i in range(len(d)):
            part = d[max(0, i - window // 2): min(len(d), i - window // 2 + window)]
            expected = (d[i] - part.mean()) / max(part.std(), 1e-6)
            assert got[i] == pytest.approx(expected, abs=1e-4)


def test_sequence_scores_match_a_loop_over_every_sequence():
    rng = np.random.default_rng(1)
    cols = [rng.normal(size=23).astype(np.float32) for _ in range(7)]
    velocities = (-1.0, 0.5, 1.0, 1.3, 2.0)
    got = sequence_scores(cols, velocities)
    for i in range(23):
        best = np.inf
        for v in velocities:
            s = 0.0
            for t in range(len(cols)):
                m = i - int(round(v * t))
                if 0 <= m < 23:
                    s += float(cols[-1 - t][m])
            best = min(best, s)
        assert got[i] == pytest.approx(best, abs=1e-4)


def _route(n=300, dim=64, noise=3.0, speed=1.0, seed=0):
    rng = np.random.default_rng(seed)
    db = rng.normal(size=(n, dim))
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    places = np.round(np.arange(0, n - 1, speed)).astype(int)
    q = db[places] + noise * rng.normal(size=(len(places), dim)) / np.sqrt(dim)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return q.astype(np.float32), db.astype(np.float32), [np.array([p - 1, p, p + 1]) for p in places]  # +-1 place


@pytest.mark.parametrize("speed", [1.0, 1.2])
def test_sequences_recover_a_route_that_single_frames_miss(speed):
    q, db, positives = _route(speed=speed)
    single = np.argsort(-(q @ db.T), axis=1)[:, :1]
    r_single = recall_from_predictions(single, positives, (1,))["recall"][1]
    r_seq = recall_from_predictions(sequence_rankings(q, db, 1, SequenceSpec(10)), positives, (1,))["recall"][1]
    assert r_single < 60 and r_seq > 90


def test_streaming_matches_the_route_ranking_and_checks_its_input():
    q, db, _ = _route(n=80)
    spec = SequenceSpec(5, (1.0,), 6)
    ranked = sequence_rankings(q, db, 3, spec)
    m = SequenceMatcher(spec)
    for j, col in enumerate(distance_column(q, db)):
        scores = m.push(col)
        assert list(np.argsort(scores, kind="stable")[:3]) == list(ranked[j])
    assert len(m) == 5
    with pytest.raises(ValueError, match="the map changed"):
        m.push(np.zeros(79))
    with pytest.raises(ValueError, match="NaN"):
        m.push(np.full(80, np.nan))
    m.reset()
    assert len(m) == 0


@pytest.mark.parametrize("kwargs", [dict(length=0), dict(length=10**6), dict(velocities=()),
                                    dict(velocities=(float("nan"),)), dict(window=0)])
def test_bad_specs_are_refused(kwargs):
    with pytest.raises(ValueError):
        SequenceSpec(**kwargs)
