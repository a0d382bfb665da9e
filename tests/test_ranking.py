"""Combining weighted query vectors, thresholds and the adaptive result cutoff."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.search.ranking import (
    SearchResult,
    adaptive_cutoff,
    apply_threshold,
    combine,
    rank,
    to_results,
)

E1, E2, E3 = np.eye(3)


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


# ------------------------------------------------------------------- combine


def test_combine_is_normalised_weighted_sum_of_unit_terms():
    # The second term is not unit length: it is normalised before weighting.
    got = combine(np.array([[1.0, 0, 0], [0, 2.0, 0]]), np.array([2.0, 1.0]))
    np.testing.assert_allclose(got, np.array([2, 1, 0]) / np.sqrt(5), atol=1e-6)
    assert got.dtype == np.float32 and got.shape == (3,)


def test_combine_with_negative_term_by_hand():
    got = combine(np.array([[1.0, 0], [0.6, 0.8]]), [1.0, -1.0])
    np.testing.assert_allclose(got, np.array([0.4, -0.8]) / np.sqrt(0.8), atol=1e-6)


def test_negative_term_pushes_matching_images_down():
    beach_with_people = unit(E1 + 0.3 * E2)
    empty_beach = unit(E1 + 0.5 * E3)
    images = np.stack([beach_with_people, empty_beach])
    plain = images @ combine(np.stack([E1]), [1.0])
    without_people = images @ combine(np.stack([E1, E2]), [1.0, -1.0])
    assert plain[0] > plain[1]  # "beach" alone prefers the crowded beach
    assert without_people[1] > without_people[0]  # "beach - people" flips the order
    np.testing.assert_allclose(
        without_people, [0.7 / np.sqrt(1.09 * 2), 1 / np.sqrt(1.25 * 2)], atol=1e-6
    )


def test_all_negative_query_is_allowed_and_normalised():
    got = combine(np.stack([E1, E2]), [-1.0, -1.0])
    np.testing.assert_allclose(got, -np.array([1, 1, 0]) / np.sqrt(2), atol=1e-6)


@pytest.mark.parametrize(
    ("vectors", "weights", "message"),
    [
        (np.stack([E1, E1 * 3]), [1.0, -1.0], "cancel out"),
        (np.stack([E1, np.zeros(3)]), [1.0, 1.0], "all-zero"),
        (np.stack([E1, E2]), [1.0], "weights"),
        (np.stack([E1]), [np.nan], "finite"),
    ],
)
def test_combine_rejects_degenerate_input(vectors, weights, message):
    with pytest.raises(ValueError, match=message):
        combine(vectors, np.asarray(weights))


# ------------------------------------------------------------------- threshold


def test_apply_threshold_drops_low_scores_and_padding():
    scores = np.array([0.31, 0.25, 0.2, -np.inf], dtype=np.float32)
    ids = np.array([5, 6, 7, -1])
    s, i = apply_threshold(scores, ids, 0.22)
    np.testing.assert_array_equal(i, [5, 6])
    np.testing.assert_allclose(s, [0.31, 0.25])
    s, i = apply_threshold(scores, ids, None)
    np.testing.assert_array_equal(i, [5, 6, 7])
    assert apply_threshold(scores, ids, 0.9)[1].size == 0


# ------------------------------------------------------------------- adaptive cutoff


def test_clear_gap_keeps_exactly_the_top_group():
    top = [0.34, 0.33, 0.31, 0.30]
    rest = list(np.linspace(0.22, 0.20, 30))
    assert adaptive_cutoff(np.array(top + rest)) == 4
    # The relative rule alone (floor 0.2 + 0.85 * 0.14 = 0.319) would have kept only 2.
    assert adaptive_cutoff(np.array(top + rest), gap=1.0) == 2


def test_clear_gap_with_library_baseline():
    rng = np.random.default_rng(0)
    library = rng.normal(0.20, 0.01, 10_000)
    scores = np.array([0.31, 0.30, 0.295, 0.24, 0.238, 0.235, 0.233, 0.23])
    assert adaptive_cutoff(scores, library) == 3


def test_flat_list_keeps_few():
    scores = np.linspace(0.30, 0.20, 100)
    # No dominant gap: relative rule keeps s >= 0.20 + 0.85 * 0.10, i.e. the first 15.
    assert adaptive_cutoff(scores) == 15


def test_list_indistinguishable_from_library_keeps_only_the_best():
    rng = np.random.default_rng(1)
    library = rng.normal(0.20, 0.02, 10_000)
    scores = np.linspace(0.205, 0.200, 20)
    assert adaptive_cutoff(scores, library) == 1


def test_library_z_floor_cuts_results_the_relative_rule_keeps():
    scores = np.array([0.26, 0.258, 0.256, 0.254, 0.252, 0.25])
    library = np.concatenate([np.full(500, 0.235), np.full(500, 0.245)])  # mean .24, std .005
    assert adaptive_cutoff(scores, library, relative=0.0) == 6  # floor 0.2475
    assert adaptive_cutoff(scores, library, relative=0.0, z=3.0) == 3  # floor 0.255
    assert adaptive_cutoff(scores, library, relative=0.0, z=5.0) == 1  # floor 0.265: best only


def test_two_equal_gaps_are_not_a_dominant_gap():
    scores = np.array([0.40, 0.39, 0.30, 0.29, 0.20, 0.19, 0.10])
    assert adaptive_cutoff(scores) == 2  # relative: s >= 0.10 + 0.85 * 0.30


@pytest.mark.parametrize(
    ("scores", "library", "expected"),
    [
        ([0.25] * 10, None, 1),
        ([0.1], None, 1),
        ([0.15, 0.14], [0.3, 0.31, 0.32], 1),  # best below the library median
        ([], None, 0),
        ([-np.inf, -np.inf], None, 0),
        ([0.3, 0.29, 0.2, -np.inf, -np.inf], None, 2),
    ],
)
def test_cutoff_always_keeps_the_best(scores, library, expected):
    lib = None if library is None else np.array(library)
    assert adaptive_cutoff(np.array(scores, dtype=np.float64), lib) == expected


def test_cutoff_rejects_bad_input():
    with pytest.raises(ValueError, match="sorted"):
        adaptive_cutoff(np.array([0.1, 0.3]))
    with pytest.raises(ValueError, match="relative"):
        adaptive_cutoff(np.array([0.3]), relative=1.5)


# ------------------------------------------------------------------- results


def test_to_results_and_rank():
    scores = np.array([0.34, 0.33, 0.31, 0.30, 0.22, 0.21, 0.20, -np.inf], dtype=np.float32)
    ids = np.array([11, 12, 13, 14, 15, 16, 17, -1])
    results = to_results(scores, ids)
    assert len(results) == 7 and results[0] == SearchResult(11, pytest.approx(0.34))
    assert all(isinstance(r.image_id, int) and isinstance(r.score, float) for r in results)
    assert [r.image_id for r in rank(scores, ids, adaptive=True)] == [11, 12, 13, 14]
    assert [r.image_id for r in rank(scores, ids, threshold=0.305)] == [11, 12, 13]
    assert [r.image_id for r in rank(scores, ids, adaptive=True, limit=2)] == [11, 12]
    assert rank(scores, ids, threshold=0.5) == []
