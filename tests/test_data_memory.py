"""Loading in float32 (no float64 copy of the whole set) and the RSS a run's training adds."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import locallearn
from locallearn.data.prepare import channel_stats, normalise_per_channel
from locallearn.measure.memory import RSSWindow


def test_channel_stats_match_numpy_without_a_float64_copy():
    rng = np.random.default_rng(0)
    x = rng.random((10_000, 2, 20, 20), dtype=np.float32)
    tracemalloc.start()
    mean, std = channel_stats(x)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 0.5 * x.size * 8, f"stats allocated {peak} bytes (a float64 copy: {x.size * 8})"
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2, 3), dtype=np.float64), rtol=1e-12)
    np.testing.assert_allclose(std, x.std(axis=(0, 2, 3), dtype=np.float64), rtol=1e-10)


def test_inplace_normalisation_allocates_no_second_copy():
    rng = np.random.default_rng(0)
    train = rng.random((5_000, 1, 28, 28), dtype=np.float32)
    test = rng.random((1_000, 1, 28, 28), dtype=np.float32)
    expected = (train - train.mean()) / train.std()
    tracemalloc.start()
    out, _, _, _ = normalise_per_channel(train, test, inplace=True)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert out is train and peak < 0.5 * train.nbytes
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    copy_in = rng.random((100, 1, 4, 4), dtype=np.float32)
    before = copy_in.copy()
    normalise_per_channel(copy_in, copy_in[:10])  # not inplace: the input is left as it was
    np.testing.assert_array_equal(copy_in, before)


@pytest.mark.skipif(not RSSWindow().exact, reason="needs Linux /proc/self/clear_refs")
def test_rss_window_sees_its_own_peak_not_an_earlier_one():
    big = np.ones(200 * 2**20 // 8)  # 200 MiB, touched, then freed: an earlier peak
    del big
    window = RSSWindow()
    assert window.added() < 50 * 2**20
    block = np.ones(100 * 2**20 // 8)  # 100 MiB inside the window
    assert window.added() >= 90 * 2**20
    del block


def test_summary_reports_rss_added():
    s = locallearn.train(rule="bp", model="mlp", data="mnist1d", train_limit=200, epochs=1)
    assert isinstance(s["rss_added_bytes"], int) and 0 <= s["rss_added_bytes"] < s["peak_rss_bytes"]
