"""Active triplet selection on planted embeddings where the right answer is known by construction."""

import numpy as np
import pytest

from alignment.active import (
    BatchRule,
    Member,
    Posterior,
    compact,
    disagreement,
    laplace_samples,
    plane_overlap,
    predictive_entropy,
    score_pool,
    select_batch,
)


def _planted() -> np.ndarray:
    """Items 0-2 form an equilateral triangle (every pair equally similar: the most uncertain triplet there
    can be); in 3-5 and 6-8 one pair is far closer than the rest (an easy triplet)."""
    angles = np.deg2rad([90, 210, 330])
    triangle = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    easy = np.array([[1.0, 0.0], [0.95, 0.05], [-1.0, 0.0]])
    return np.vstack([triangle, easy, easy * 0.5]) * 3.0


POOL = np.array([[3, 4, 5], [0, 1, 2], [6, 7, 8], [3, 4, 8]])


def test_uncertainty_scores_the_equilateral_triplet_highest_at_log3():
    scores = score_pool("uncertainty", POOL, [Member(_planted(), 1.0)])
    assert int(np.argmax(scores)) == 1
    assert scores[1] == pytest.approx(np.log(3))
    assert scores[0] < 0.5 * np.log(3)


def test_scores_do_not_depend_on_the_order_of_a_candidates_items():
    members = [Member(_planted(), 1.0), Member(_planted()[::-1].copy(), 2.0)]
    shuffled = POOL[:, [2, 0, 1]]
    for strategy in ("uncertainty", "disagreement"):
        assert np.allclose(score_pool(strategy, POOL, members), score_pool(strategy, shuffled, members))


def test_disagreement_prefers_a_confident_dispute_over_a_shared_coin_flip():
    """Both members find 0-1-2 a coin flip (high entropy, nothing to learn); on 3-4-5 the second member is
    sure of a different pair than the first."""
    first = _planted()
    second = first.copy()
    second[[3, 5]] = second[[5, 3]]  # the second member is sure the close pair is (4, 5), not (3, 4)
    members = [Member(first, 0.5), Member(second, 0.5)]
    scores = score_pool("disagreement", POOL[:2], members)
    assert scores[1] == pytest.approx(0.0, abs=1e-12)
    assert scores[0] > 0.5
    assert (
        score_pool("uncertainty", POOL[:2], [members[0]])[1]
        > score_pool("uncertainty", POOL[:2], [members[0]])[0]
    )


def test_two_member_disagreement_is_their_jensen_shannon_divergence():
    p = np.array([[0.7, 0.2, 0.1], [0.3, 0.3, 0.4]])
    q = np.array([[0.1, 0.2, 0.7], [0.3, 0.3, 0.4]])
    m = (p + q) / 2
    kl = lambda a, b: (a * np.log(a / b)).sum(axis=1)  # noqa: E731
    assert np.allclose(disagreement([p, q]), (kl(p, m) + kl(q, m)) / 2)
    assert np.allclose(predictive_entropy([p]), -(p * np.log(p)).sum(axis=1))


def test_anchor_rows_score_a_tie_at_log2():
    z = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [5.0, 0.0], [-5.0, 0.0]])
    anchors = np.array([[0, 1, 2], [0, 3, 4]])  # head 0: 1 and 2 equally similar; 3 far more than 4
    scores = score_pool("uncertainty", anchors, [Member(z, 1.0)], kind="anchor")
    assert scores[0] == pytest.approx(np.log(2))
    assert scores[1] < 0.1


def test_bad_strategy_and_single_member_disagreement_are_refused():
    with pytest.raises(ValueError, match="strategy must be one of"):
        score_pool("entropy", POOL, [Member(_planted(), 1.0)])
    with pytest.raises(ValueError, match="at least 2 members"):
        score_pool("disagreement", POOL, [Member(_planted(), 1.0)])
    with pytest.raises(ValueError, match="needs at least one scoring member"):
        score_pool("uncertainty", POOL, [])


def test_batch_keeps_the_random_share_and_records_why():
    rng = np.random.default_rng(0)
    pool = np.array([[3 * i, 3 * i + 1, 3 * i + 2] for i in range(30)])
    scores = np.arange(30, dtype=float)
    chosen = select_batch(pool, scores, 10, strategy="uncertainty", rng=rng, teacher_run="run-7")
    strategies = [c.strategy for c in chosen]
    assert strategies.count("random") == 2 and strategies.count("uncertainty") == 8
    scored = [c for c in chosen if c.strategy == "uncertainty"]
    randoms = {c.pool_index for c in chosen if c.strategy == "random"}
    expected = [r for r in range(29, -1, -1) if r not in randoms][:8]
    assert [c.pool_index for c in scored] == expected
    assert all(
        c.reason() == {"score": scores[c.pool_index], "strategy": "uncertainty", "teacher_run": "run-7"}
        for c in scored
    )
    assert all(c.score == 0.0 and c.teacher_run == "run-7" for c in chosen if c.strategy == "random")


def test_no_two_triplets_in_a_batch_share_an_image_when_the_pool_allows():
    pool = np.array([[0, 1, 2], [0, 3, 4], [5, 6, 7], [2, 8, 9], [10, 11, 12]])
    scores = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    chosen = select_batch(
        pool,
        scores,
        3,
        strategy="uncertainty",
        rng=np.random.default_rng(0),
        rule=BatchRule(random_share=0.0),
    )
    assert [c.pool_index for c in chosen] == [0, 2, 4]


def test_a_triplet_asking_about_the_same_plane_is_skipped():
    """Rows 0 and 1 use different images but lie in the same plane of the embedding (row 1 is row 0 shifted
    along it); row 2 spans another plane."""
    z = np.zeros((9, 3))
    z[[0, 1, 2]] = [[0, 0, 0], [1, 0, 0], [0, 1, 0]]
    z[[3, 4, 5]] = [[2, 2, 0], [3, 2, 0], [2, 4, 0]]
    z[[6, 7, 8]] = [[0, 0, 1], [0, 1, 2], [1, 0, 3]]
    pool = np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8]])
    rule = BatchRule(random_share=0.0)
    kwargs = {"strategy": "uncertainty", "rule": rule, "rng": np.random.default_rng(0)}
    with_directions = select_batch(pool, np.array([3.0, 2.0, 1.0]), 2, embedding=z, **kwargs)
    assert [c.pool_index for c in with_directions] == [0, 2]
    images_only = select_batch(pool, np.array([3.0, 2.0, 1.0]), 2, **kwargs)
    assert [c.pool_index for c in images_only] == [0, 1]


def test_plane_overlap_is_one_for_the_same_plane_and_zero_for_orthogonal_ones():
    xy = np.eye(3)[:, :2]
    swapped = np.eye(3)[:, [1, 0]]
    xz = np.eye(3)[:, [0, 2]]
    z_and_tilted = np.linalg.qr(np.array([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]]))[0]
    overlaps = plane_overlap(xy, np.stack([xy, swapped, xz, z_and_tilted]))
    assert overlaps == pytest.approx([1.0, 1.0, 0.5, 0.5])


def test_a_full_batch_is_returned_even_when_the_rule_cannot_be_met():
    """In a 2-D embedding every triplet spans the same plane: one passes the rule, the rest fill the batch in
    score order."""
    z = np.random.default_rng(0).normal(size=(12, 2))
    pool = np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]])
    chosen = select_batch(
        pool,
        np.array([4.0, 1.0, 3.0, 2.0]),
        3,
        strategy="uncertainty",
        embedding=z,
        rng=np.random.default_rng(0),
        rule=BatchRule(random_share=0.0),
    )
    assert [c.pool_index for c in chosen] == [0, 2, 3]
    assert len(select_batch(pool, np.zeros(4), 10, strategy="random", rng=np.random.default_rng(0))) == 4


def test_compact_keeps_every_dot_product_in_fewer_dimensions():
    z = np.random.default_rng(1).normal(size=(5, 40))
    small = compact(z)
    assert small.shape == (5, 5)
    assert np.allclose(small @ small.T, z @ z.T)
    pool = np.array([[0, 1, 2], [1, 3, 4]])
    assert np.allclose(
        score_pool("uncertainty", pool, [Member(z, 3.0)]),
        score_pool("uncertainty", pool, [Member(small, 3.0)]),
    )


def test_mutual_information_is_zero_for_a_shared_coin_flip_and_high_for_a_confident_dispute():
    """BALD's known answers: teachers that all say 1/3 each carry no information about which teacher is
    right; two camps each sure of a different pair carry nearly log 2."""
    third = np.full((1, 3), 1 / 3)
    assert disagreement([third] * 4) == pytest.approx([0.0], abs=1e-12)
    sure_a, sure_b = np.array([[0.98, 0.01, 0.01]]), np.array([[0.01, 0.98, 0.01]])
    dispute = disagreement([sure_a, sure_b, sure_a, sure_b])
    assert dispute[0] > 0.6 and dispute[0] < np.log(2)
    assert predictive_entropy([third] * 4)[0] > predictive_entropy([sure_a, sure_b])[0]


def _two_axes() -> np.ndarray:
    """Images on two axes of the teacher space: 0-5 differ along x only, 6-8 along y only; 9-11 sit on one
    point (no teacher can tell their pairs apart); 12-14 differ along x only, a near tie for the teacher."""
    z = np.zeros((15, 2))
    z[:6, 0] = [2.0, 1.6, -1.0, 0.5, -2.0, 1.2]
    z[6:9] = [[0.0, 2.0], [0.0, 1.0], [0.0, -1.5]]
    z[9:12] = [0.7, 0.7]
    z[12:15, 0] = [1.0, 1.05, 0.95]
    return z * 1.5


def test_information_is_zero_where_every_teacher_agrees_on_a_coin_flip():
    z = _two_axes()
    pool = np.array([[9, 10, 11]])
    information = score_pool("information", pool, [Member(z, 1.0)], asked=np.empty((0, 3), np.int64))
    assert information == pytest.approx([0.0], abs=1e-9)
    assert score_pool("uncertainty", pool, [Member(z, 1.0)]) == pytest.approx([np.log(3)])


def test_information_prefers_what_the_answers_left_open_over_aleatoric_noise():
    """After many triplets about the x axis, a near tie along x is still the teacher's most uncertain
    triplet (uncertainty picks it), but every plausible teacher agrees on it; the y axis was never asked
    about, so a y triplet's answer would teach the teacher something (information picks it). Once y
    triplets are asked too, that triplet's information falls."""
    z = _two_axes()
    teacher = Member(z, 1.0)
    x_triplets = np.array([[a, b, c] for a in range(6) for b in range(6) for c in range(6) if a < b != c > a])
    asked_x = np.repeat(x_triplets, 20, axis=0)
    pool = np.array([[12, 13, 14], [6, 7, 8]])  # near tie along x; y triplet
    information = score_pool("information", pool, [teacher], asked=asked_x)
    uncertainty = score_pool("uncertainty", pool, [teacher])
    assert uncertainty[0] > uncertainty[1]
    assert information[1] > 5 * information[0]
    asked_both = np.vstack([asked_x, np.repeat([[6, 7, 8], [7, 8, 6], [6, 8, 7]], 100, axis=0)])
    assert score_pool("information", pool, [teacher], asked=asked_both)[1] < information[1] / 3


def test_laplace_teachers_centre_on_the_fit_and_narrow_with_answers():
    z = np.random.default_rng(3).normal(size=(30, 12))
    teacher = Member(z, 2.0)
    rng = np.random.default_rng(4)
    pool = np.stack([rng.choice(30, 3, replace=False) for _ in range(50)])
    fitted = teacher.probabilities(pool, "triplet")
    spread = []
    for n_asked in (0, 2000):
        asked = np.array([rng.choice(30, 3, replace=False) for _ in range(n_asked)], np.int64).reshape(-1, 3)
        drawn = np.stack(laplace_samples(teacher, pool, asked, posterior=Posterior(samples=200)))
        assert drawn.shape == (200, 50, 3) and np.allclose(drawn.sum(axis=2), 1)
        spread.append(np.abs(drawn - fitted).mean())
        assert np.abs(drawn.mean(axis=0) - fitted).mean() < 0.5 * spread[-1] + 0.02
    assert spread[1] < spread[0] / 3


def test_information_needs_the_asked_rows_and_a_sane_posterior():
    with pytest.raises(ValueError, match="needs the asked rows"):
        score_pool("information", POOL, [Member(_planted(), 1.0)])
    with pytest.raises(ValueError, match="samples >= 2"):
        Posterior(samples=1)
