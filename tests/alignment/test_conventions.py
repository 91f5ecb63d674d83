"""The triplet convention: pair order, odd one out last, ties counted wrong, numpy == torch."""

import numpy as np
import pytest
import torch

from alignment import conventions
from alignment.conventions import (
    anchor_similarities,
    check_triplets,
    correct_choices,
    entropy,
    odd_one_out_counts_to_pair_probs,
    pair_similarities,
    predicted_odd_one_out,
    triplet_probabilities,
)

Z = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [2.0, 0.0]])


def test_pair_similarities_order_is_s01_s02_s12():
    sims = pair_similarities(Z, np.array([[0, 1, 2]]))
    np.testing.assert_allclose(sims, [[0.9, 0.0, 0.1]])


def test_anchor_similarities_are_head_close_then_head_far_and_share_the_softmax():
    rows = np.array([[0, 1, 2], [0, 2, 1]])  # (head, close, far)
    sims = anchor_similarities(Z, rows)
    np.testing.assert_allclose(sims, [[0.9, 0.0], [0.0, 0.9]])
    assert correct_choices(sims).tolist() == [True, False]
    probs = triplet_probabilities(sims, temperature=0.5)  # p(close) = sigmoid((s_hc - s_hf) / T)
    assert probs[0, 0] == pytest.approx(1 / (1 + np.exp(-0.9 / 0.5)))
    with pytest.raises(ValueError, match=r"anchor row 0 .* repeats an item"):
        check_triplets([[1, 1, 2]], 4, "anchor")


def test_cosine_ignores_length_but_dot_does_not():
    t = np.array([[0, 3, 2]])
    np.testing.assert_allclose(pair_similarities(Z, t, "dot"), [[2.0, 0.0, 0.0]])
    np.testing.assert_allclose(pair_similarities(Z, t, "cosine"), [[1.0, 0.0, 0.0]])


def test_torch_and_numpy_agree():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(10, 4))
    t = np.array([[0, 1, 2], [3, 4, 5], [9, 8, 7]])
    for sim in ("dot", "cosine"):
        ref = pair_similarities(z, t, sim)
        got = pair_similarities(torch.from_numpy(z), torch.from_numpy(t), sim).numpy()
        np.testing.assert_allclose(got, ref, rtol=1e-10)
        np.testing.assert_allclose(
            triplet_probabilities(torch.from_numpy(ref), 0.5).numpy(), triplet_probabilities(ref, 0.5)
        )


def test_the_gram_route_of_a_training_step_gives_the_gathered_similarities_and_gradients():
    """Many triplets over few images go through one n x n product (fast); few triplets gather rows. Both must
    give the same similarities and the same gradient for the embeddings."""
    rng = np.random.default_rng(1)
    z = torch.from_numpy(rng.normal(size=(12, 8)))
    many = torch.from_numpy(np.array([rng.choice(12, 3, replace=False) for _ in range(40)]))
    few = many[:2]
    assert conventions._gram_is_cheaper(z, many) and not conventions._gram_is_cheaper(z, few)
    for sim in ("dot", "cosine"):
        via_gram, gathered = z.clone().requires_grad_(), z.clone().requires_grad_()
        sims = pair_similarities(via_gram, many, sim)
        reference = torch.cat([pair_similarities(gathered, many[i : i + 2], sim) for i in range(0, 40, 2)])
        torch.testing.assert_close(sims, reference)
        (sims * torch.arange(120.0, dtype=sims.dtype).reshape(40, 3)).sum().backward()
        (reference * torch.arange(120.0, dtype=sims.dtype).reshape(40, 3)).sum().backward()
        torch.testing.assert_close(via_gram.grad, gathered.grad)


def test_many_judgments_are_scored_in_chunks_with_the_same_result(monkeypatch):
    """Long judgment lists are gathered a chunk at a time (bounded memory); chunk edges change nothing, in
    numpy and torch, for both kinds and both similarities."""
    rng = np.random.default_rng(1)
    z = rng.normal(size=(12, 5))
    rows = np.stack([rng.permutation(12)[:3] for _ in range(23)])
    whole = {
        sim: (pair_similarities(z, rows, sim), anchor_similarities(z, rows, sim)) for sim in ("dot", "cosine")
    }
    monkeypatch.setattr(conventions, "SIMILARITY_CHUNK_ROWS", 4)  # 23 rows: 5 full chunks and a partial one
    for sim, (triplet_sims, anchor_sims) in whole.items():
        np.testing.assert_allclose(pair_similarities(z, rows, sim), triplet_sims, rtol=1e-12)
        np.testing.assert_allclose(anchor_similarities(z, rows, sim), anchor_sims, rtol=1e-12)
        got = pair_similarities(torch.from_numpy(z), torch.from_numpy(rows), sim).numpy()
        np.testing.assert_allclose(got, triplet_sims, rtol=1e-10)


def test_probabilities_hand_computed():
    p = triplet_probabilities(np.array([[np.log(2.0), 0.0, 0.0]]), temperature=1.0)
    np.testing.assert_allclose(p, [[0.5, 0.25, 0.25]])
    p_hot = triplet_probabilities(np.array([[np.log(2.0), 0.0, 0.0]]), temperature=0.5)
    np.testing.assert_allclose(p_hot, [[4 / 6, 1 / 6, 1 / 6]])


def test_predicted_odd_one_out_is_item_outside_best_pair_and_ties_are_wrong():
    sims = np.array([[3.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 1.0, 3.0], [2.0, 2.0, 0.0], [1.0, 1.0, 1.0]])
    assert predicted_odd_one_out(sims).tolist() == [2, 1, 0, -1, -1]
    assert correct_choices(sims).tolist() == [True, False, False, False, False]


def test_entropy_of_uniform_is_log3():
    np.testing.assert_allclose(entropy(np.array([[1 / 3] * 3, [1.0, 0.0, 0.0]])), [np.log(3), 0.0])


def test_counts_to_pair_probs_maps_odd_item_to_complementary_pair():
    # 3 people chose item 2 as odd one out (pair 01), 1 chose item 0 (pair 12)
    np.testing.assert_allclose(odd_one_out_counts_to_pair_probs(np.array([[1, 0, 3]])), [[0.75, 0.0, 0.25]])


@pytest.mark.parametrize(
    "bad, message",
    [(np.array([[0, 1]]), "shape"), (np.array([[0, 1, 5]]), "row 0"), (np.array([[0, 1, 1]]), "repeats")],
)
def test_check_triplets_names_the_problem(bad, message):
    with pytest.raises(ValueError, match=message):
        check_triplets(bad, n_items=4)
