"""Bootstrap resampling draws whole runs, within each group."""

from __future__ import annotations

import numpy as np

from scaling.fit.resample import resample_weights


def test_runs_move_together_and_groups_keep_their_size():
    group = np.array([0] * 6 + [1] * 4)
    unit = np.array(["a", "a", "b", "b", "c", "c", "x", "y", "z", "w"])
    w = resample_weights(group, unit, 500, np.random.default_rng(0))
    assert w.shape == (500, 10)
    for a, b in ((0, 1), (2, 3), (4, 5)):
        np.testing.assert_array_equal(w[:, a], w[:, b])  # checkpoints of one run share a count
    np.testing.assert_array_equal(w[:, [0, 2, 4]].sum(axis=1), 3)  # 3 runs drawn in group 0
    np.testing.assert_array_equal(w[:, 6:].sum(axis=1), 4)
    assert np.allclose(w.mean(axis=0), 1.0, atol=0.15)  # each run drawn once on average
    assert (w == 0).any() and (w >= 2).any()
