"""Synthetic embeddings with a planted reorganisation (the AligNet lizard picture), shared by map tests.

Five categories in two superordinates; each category has a colour. Before alignment the embedding is
dominated by colour (green lizards sit with green plants); after alignment by superordinate, so the
lizards move to the other animals while every other category keeps its neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CATEGORIES = {
    "dog": ("animal", "brown"),
    "cat": ("animal", "grey"),
    "lizard": ("animal", "green"),
    "fern": ("plant", "green"),
    "cactus": ("plant", "green"),
}


@dataclass(frozen=True)
class Planted:
    before: np.ndarray
    after: np.ndarray
    category: np.ndarray
    superordinate: np.ndarray
    colour: np.ndarray


def lizard_moves(per_category: int = 8, dim: int = 32, noise: float = 0.3, seed: int = 0) -> Planted:
    """Before: colour + category structure; after: lizard rows only move from the green (plant) region
    to the animal region. All other rows are unchanged."""
    rng = np.random.default_rng(seed)
    axes = np.linalg.qr(rng.normal(size=(dim, dim)))[0]  # orthonormal directions
    colour_axis = {"brown": axes[0], "grey": axes[1], "green": axes[2]}
    super_axis = {"animal": axes[3], "plant": axes[4]}
    category_axis = {name: axes[5 + i] for i, name in enumerate(CATEGORIES)}
    rows_before, rows_after, labels = [], [], []
    for name, (superordinate, colour) in CATEGORIES.items():
        for _ in range(per_category):
            jitter = noise * rng.normal(size=dim)
            base = 1.0 * category_axis[name] + jitter
            looks_like = (
                "plant" if colour == "green" else superordinate
            )  # before: green lizards look like plants
            before = base + 2.0 * colour_axis[colour] + 1.5 * super_axis[looks_like]
            after = (
                before if name != "lizard" else base + 2.0 * colour_axis["brown"] + 1.5 * super_axis["animal"]
            )
            rows_before.append(before)
            rows_after.append(after)
            labels.append((name, superordinate, colour))
    category, superordinate, colour = (np.array(column) for column in zip(*labels, strict=True))
    return Planted(np.array(rows_before), np.array(rows_after), category, superordinate, colour)


def colour_to_category(per_cell: int = 10, dim: int = 24, noise: float = 0.2, seed: int = 1) -> Planted:
    """Four categories x two colours. Before, colour dominates; after, category (and superordinate)."""
    rng = np.random.default_rng(seed)
    axes = np.linalg.qr(rng.normal(size=(dim, dim)))[0]
    categories = {"dog": "animal", "cat": "animal", "rose": "plant", "oak": "plant"}
    rows_before, rows_after, labels = [], [], []
    for c, (name, superordinate) in enumerate(categories.items()):
        for colour_index, colour in enumerate(("red", "blue")):
            for _ in range(per_cell):
                jitter = noise * rng.normal(size=dim)
                category_part = axes[c] + (axes[4] if superordinate == "animal" else axes[5])
                rows_before.append(3.0 * axes[6 + colour_index] + 0.2 * category_part + jitter)
                rows_after.append(0.2 * axes[6 + colour_index] + 3.0 * category_part + jitter)
                labels.append((name, superordinate, colour))
    category, superordinate, colour = (np.array(column) for column in zip(*labels, strict=True))
    return Planted(np.array(rows_before), np.array(rows_after), category, superordinate, colour)


def random_similarity_transform(x: np.ndarray, scale: float = 3.5, seed: int = 2) -> np.ndarray:
    """A random rotation/reflection and a global scale of the rows: no reorganisation at all."""
    q = np.linalg.qr(np.random.default_rng(seed).normal(size=(x.shape[1], x.shape[1])))[0]
    return scale * x @ q


def relocate_rows(x: np.ndarray, rows: list[int], targets: list[int], seed: int = 3) -> np.ndarray:
    """A copy of x where each row in `rows` is moved next to the row in `targets` (a tiny jitter added)."""
    moved = x.copy()
    moved[rows] = x[targets] + 0.01 * np.random.default_rng(seed).normal(size=(len(rows), x.shape[1]))
    return moved


def cosine_similarity_matrix(z: np.ndarray) -> np.ndarray:
    """[n, n] cosine similarities, for simulating judgments of small planted sets (tests only: n x n)."""
    unit = z / np.linalg.norm(z, axis=1, keepdims=True)
    return unit @ unit.T
