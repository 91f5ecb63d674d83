"""The teacher's optimisation problem, arranged so one step costs O(n r^2 + n^2 r), not O(m D^2).

Parametrisation: W = s * (c (I - V V^T) + V M V^T), b = s * V beta, where V [D, r] holds the top-r
principal directions of the training images' standardised features (uncentred), M [r, r] starts at I,
c at 1 and beta at 0, so W starts at the scaled identity s I. W is free on the directions the training
images span and a scaled identity elsewhere; with r = min(n_images, D) this is exact (the images have
no component outside V), and the gLocal regulariser pulls toward exactly that form anyway.

Odd-one-out triplets and anchor rows are fitted together: both only need similarities of image pairs.
For a set of images with coordinates Y = X~ V and residuals P = X~ - Y V^T:
    z_a . z_b = s^2 * (c^2 * p_a . p_b + (M y_a + beta) . (M y_b + beta)),
so the residual products are computed once, and each step transforms only the n distinct images
(n << m triplets) and computes z_a . z_b for the distinct pairs the triplets use (a sampled matrix
product and a sparse one for the gradient, or one dense Gram product when the pairs fill much of the
n x n matrix), then gathers each triplet's [s01, s02, s12] and each anchor row's [s_hc, s_hf] by index.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from alignment.conventions import ANCHOR_PAIRS, PAIRS
from alignment.splits import TripletData
from alignment.teacher_losses import (
    choice_nll,
    cosine_matrix,
    local_neighbourhood_loss,
    soft_triplet_kl,
    target_log_target,
)


def principal_basis(x: torch.Tensor, rank: int | None, seed: int = 0) -> torch.Tensor:
    """[D, r] orthonormal top right-singular vectors of x [n, D]; the identity when r would be D. The same
    for the same x and seed whatever torch's global random state (fits running side by side in threads
    cannot disturb each other's basis)."""
    n, dim = x.shape
    r = dim if rank is None else min(rank, n, dim)
    if r == dim:
        return torch.eye(dim)
    if r == n:  # n < D: the images span at most n directions, keep all of them (exact)
        return torch.linalg.svd(x, full_matrices=False).Vh.T
    return _randomised_right_singular(x, min(r + 16, n, dim), torch.Generator().manual_seed(seed))[:, :r]


def _randomised_right_singular(x: torch.Tensor, q: int, generator: torch.Generator, niter: int = 2):
    """[D, q] approximate top right-singular vectors of x by a randomised range finder with ``niter`` power
    iterations (Halko et al.; what ``torch.svd_lowrank`` does, but on a generator of its own)."""
    range_basis = torch.linalg.qr(x @ torch.randn(x.shape[1], q, generator=generator, dtype=x.dtype)).Q
    for _ in range(niter):
        range_basis = torch.linalg.qr(x.T @ range_basis).Q
        range_basis = torch.linalg.qr(x @ range_basis).Q
    return torch.linalg.svd(range_basis.T @ x, full_matrices=False).Vh.T.contiguous()


def _csr_rows(rows: torch.Tensor, n: int) -> torch.Tensor:
    """CSR row pointer [n + 1] for sorted row indices."""
    return torch.cat([torch.zeros(1, dtype=torch.int64), torch.bincount(rows, minlength=n).cumsum(0)])


# "Sparse CSR tensor support is in beta": the two CSR ops used here are tested. Filtered by its message once
# at import, not with catch_warnings around each call: that swaps the process-wide filter list, which folds
# fitted in parallel threads would race on (and could leave every UserWarning ignored)
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)

# a dense n x n Gram matrix (one BLAS product) instead of the sampled sparse product once the pairs fill more
# than 1/DENSE_GRAM_RATIO of it. Measured (2 cores, loaded): 1,854 images / 0.91M pairs 0.150 vs 0.199 CPU s
# per forward + backward; 1,483 images / 0.26M pairs 0.096 vs 0.094 (break-even near this ratio)
DENSE_GRAM_RATIO = 16


@dataclass(frozen=True)
class _SparsePattern:
    """CSR patterns of the distinct pairs (upper triangle) and of the pairs with their mirror images."""

    crow: torch.Tensor
    col: torch.Tensor
    sym_crow: torch.Tensor
    sym_col: torch.Tensor
    sym_order: torch.Tensor  # cat([g, g])[sym_order] are the gradient values in sym pattern order

    @classmethod
    def build(cls, keys: torch.Tensor, n: int) -> _SparsePattern:
        rows, cols = keys // n, keys % n
        sym_keys = torch.cat([keys, cols * n + rows])
        sym_order = torch.argsort(sym_keys)
        sym_sorted = sym_keys[sym_order]
        return cls(_csr_rows(rows, n), cols, _csr_rows(sym_sorted // n, n), sym_sorted % n, sym_order)


class _GramScratch:
    """The dense path's two n x n buffers, reused by every step of a fit instead of allocated per step (a
    fresh 14 MB matrix is mapped, page-faulted and zero-filled each time). The gradient buffer is only ever
    written at the pairs' positions and their mirrors, so it stays zero elsewhere without being cleared.
    One fit's own: folds fitted in parallel threads build their own indexes."""

    def __init__(self, keys: torch.Tensor, n: int):
        self.n = n
        self.mirrored_keys = (keys % n) * n + keys // n  # b * n + a per pair: its mirror's position
        self.gram: torch.Tensor | None = None
        self.grad: torch.Tensor | None = None

    def gram_of(self, z: torch.Tensor) -> torch.Tensor:
        """Z Z^T flattened, written into the reused buffer (valid until the next call)."""
        if self.gram is None or self.gram.dtype != z.dtype:
            self.gram = torch.empty(self.n, self.n, dtype=z.dtype)
        return torch.mm(z, z.T, out=self.gram).view(-1)

    def symmetric_grad(self, keys: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """[n, n] with the pairs' gradients at (a, b) and (b, a), zero elsewhere (valid until the next
        call)."""
        if self.grad is None or self.grad.dtype != grad.dtype:
            self.grad = torch.zeros(self.n * self.n, dtype=grad.dtype)
        return self.grad.index_copy_(0, keys, grad).index_copy_(0, self.mirrored_keys, grad).view(self.n, -1)


@dataclass(frozen=True)
class PairIndex:
    """The distinct image pairs some judgments use (sorted, a < b).

    Only these entries of Z Z^T are ever needed. When they are a small share of the n x n matrix, forward is
    a sampled matrix product over the pairs and backward one sparse-dense product, so a step costs
    O(pairs * r) instead of O(n^2 * r); when they fill much of it (few images, many judgments), one dense
    Gram product and a gather are faster (``DENSE_GRAM_RATIO``).
    """

    n: int
    keys: torch.Tensor  # a * n + b per distinct pair: its position in the flattened n x n Gram matrix
    sparse: _SparsePattern | None  # None: the dense Gram product is used
    scratch: _GramScratch | None  # the dense path's reused buffers (None when sparse)

    @classmethod
    def build(cls, a: torch.Tensor, b: torch.Tensor, n: int) -> tuple[PairIndex, torch.Tensor]:
        """The index of the pairs (a[i], b[i]) and, for each i, the position of its pair among the
        distinct ones."""
        keys, inverse = torch.unique(torch.minimum(a, b) * n + torch.maximum(a, b), return_inverse=True)
        if n * n <= DENSE_GRAM_RATIO * len(keys):
            return cls(n, keys, None, _GramScratch(keys, n)), inverse
        return cls(n, keys, _SparsePattern.build(keys, n), None), inverse

    def pattern(self, values: torch.Tensor, symmetric: bool = False) -> torch.Tensor:
        assert self.sparse is not None, "a dense PairIndex has no sparse pattern"
        pattern = self.sparse
        crow, col = (pattern.sym_crow, pattern.sym_col) if symmetric else (pattern.crow, pattern.col)
        return torch.sparse_csr_tensor(crow, col, values, size=(self.n, self.n), check_invariants=False)


class _PairDots(torch.autograd.Function):
    """Dot products z_a . z_b for the distinct pairs of a sparse PairIndex (custom sparse backward)."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, index: PairIndex) -> torch.Tensor:
        ctx.save_for_backward(z)
        ctx.index = index
        empty = index.pattern(torch.zeros(len(index.keys), dtype=z.dtype))
        return torch.sparse.sampled_addmm(empty, z, z.T).values()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (z,) = ctx.saved_tensors
        index = ctx.index
        assert index.sparse is not None
        mirrored = index.pattern(torch.cat([grad, grad])[index.sparse.sym_order], symmetric=True)
        return mirrored @ z, None


class _GramDots(torch.autograd.Function):
    """Dot products z_a . z_b (a < b) of a dense PairIndex, read off one Gram product Z Z^T. The backward is
    one product G Z with G the pairs' gradients scattered into n x n at (a, b) and (b, a), where autograd's
    ``z @ z.T`` takes two (one per operand)."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, index: PairIndex) -> torch.Tensor:
        ctx.save_for_backward(z)
        ctx.index = index
        assert index.scratch is not None
        return index.scratch.gram_of(z).index_select(0, index.keys)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (z,) = ctx.saved_tensors
        index = ctx.index
        assert index.scratch is not None
        return index.scratch.symmetric_grad(index.keys, grad.contiguous()) @ z, None


def pair_dots(z: torch.Tensor, index: PairIndex) -> torch.Tensor:
    """[P] dot products of the distinct pairs behind ``index``, from embeddings z [n, r]."""
    if index.scratch is not None:
        return _GramDots.apply(z, index)
    return _PairDots.apply(z, index)


def _pair_ends(triplets: torch.Tensor, anchors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both ends of every candidate pair: the triplets' [s01, s02, s12], then the anchors' [s_hc, s_hf]."""
    firsts, seconds = [], []
    for rows, pairs in ((triplets, PAIRS), (anchors, ANCHOR_PAIRS)):
        firsts.append(rows[:, [i for i, _ in pairs]].flatten())
        seconds.append(rows[:, [j for _, j in pairs]].flatten())
    return torch.cat(firsts), torch.cat(seconds)


@dataclass
class ImageSet:
    """Judgments on their own distinct images: coordinates y [n_u, r], the distinct pairs the judgments use
    with their residual products, and where each triplet's [s01, s02, s12] and each anchor row's
    [s_hc, s_hf] sit among those pairs."""

    y: torch.Tensor
    t: torch.Tensor  # compact triplets [m, 3]
    a: torch.Tensor  # compact anchor rows [m_a, 3]
    pairs: PairIndex
    of_triplet: torch.Tensor  # [m, 3]
    of_anchor: torch.Tensor  # [m_a, 2]
    residual: torch.Tensor  # [P] products of the parts outside span(V): constant during fitting
    q: torch.Tensor | None
    # the loss's pair-major layout ([3, m] gathers and softmaxes run several times faster than [m, 3]):
    # of_triplet and of_anchor transposed and flattened, q transposed and its sum q log q per triplet
    triplet_pairs: torch.Tensor = field(init=False)
    anchor_pairs: torch.Tensor = field(init=False)
    q_pairs: torch.Tensor | None = field(init=False)
    q_log_q: torch.Tensor | None = field(init=False)

    def __post_init__(self):
        self.triplet_pairs = self.of_triplet.T.contiguous().flatten()
        self.anchor_pairs = self.of_anchor.T.contiguous().flatten()
        self.q_pairs = None if self.q is None else self.q.T.contiguous()
        self.q_log_q = None if self.q_pairs is None else target_log_target(self.q_pairs, dim=0)

    @classmethod
    def build(cls, standardised: np.ndarray, data: TripletData, basis: torch.Tensor, soft: bool) -> ImageSet:
        rows, inverse = np.unique(
            np.concatenate([data.triplets.ravel(), data.anchors.ravel()]), return_inverse=True
        )
        compact = torch.from_numpy(inverse.reshape(-1, 3))
        t, a = compact[: len(data.triplets)], compact[len(data.triplets) :]
        x = torch.from_numpy(standardised[rows])
        y = x @ basis
        q = torch.tensor(data.choice_probs, dtype=torch.float32) if soft else None  # a copy: may be read-only
        images = cls._indexed(y, t, a, q)
        if basis.shape[1] < x.shape[1]:
            with torch.no_grad():
                images.residual = pair_dots(x - y @ basis.T, images.pairs)
        return images

    @classmethod
    def _indexed(cls, y: torch.Tensor, t: torch.Tensor, a: torch.Tensor, q: torch.Tensor | None) -> ImageSet:
        pairs, position = PairIndex.build(*_pair_ends(t, a), len(y))
        of_triplet, of_anchor = position[: 3 * len(t)].view(-1, 3), position[3 * len(t) :].view(-1, 2)
        return cls(y, t, a, pairs, of_triplet, of_anchor, torch.zeros(len(pairs.keys)), q)

    def __len__(self) -> int:
        return len(self.t) + len(self.a)

    def batch(self, rows: torch.Tensor) -> ImageSet:
        """The sub-problem of some judgments (rows < len(t) are triplets, the rest anchor rows), on only the
        images they use."""
        t_rows, a_rows = rows[rows < len(self.t)], rows[rows >= len(self.t)] - len(self.t)
        images, compact = torch.unique(
            torch.cat([self.t[t_rows].flatten(), self.a[a_rows].flatten()]), return_inverse=True
        )
        compact = compact.view(-1, 3)
        q = None if self.q is None else self.q[t_rows]
        part = ImageSet._indexed(self.y[images], compact[: len(t_rows)], compact[len(t_rows) :], q)
        old = torch.cat([self.of_triplet[t_rows].flatten(), self.of_anchor[a_rows].flatten()])
        new = torch.cat([part.of_triplet.flatten(), part.of_anchor.flatten()])
        part.residual[new] = self.residual[old]
        return part

    def data_loss(self, pair_values: torch.Tensor) -> torch.Tensor:
        """Mean loss per judgment: odd-one-out NLL (or KL to the human choice distribution) and anchor NLL,
        each row weighted once, from the similarities [P] of the distinct pairs."""
        parts: list[torch.Tensor] = []
        if len(self.t):
            sims = pair_values.index_select(0, self.triplet_pairs).view(3, -1)
            loss = (
                choice_nll(sims, dim=0)
                if self.q_pairs is None
                else soft_triplet_kl(sims, self.q_pairs, q_log_q=self.q_log_q, dim=0)
            )
            parts.append(len(self.t) * loss)
        if len(self.a):
            parts.append(
                len(self.a) * choice_nll(pair_values.index_select(0, self.anchor_pairs).view(2, -1), dim=0)
            )
        return torch.stack(parts).sum() / len(self)


class AffineTransform:
    """Trainable M, c, beta (relative to the initial scale s) and their closed-form consequences."""

    def __init__(self, basis: torch.Tensor, scale: float, use_bias: bool):
        self.basis, self.scale, self.dim = basis, scale, basis.shape[0]
        r = basis.shape[1]
        self.m = torch.eye(r, requires_grad=True)
        self.c = torch.ones((), requires_grad=r < self.dim)
        self.beta = torch.zeros(r, requires_grad=use_bias)

    @property
    def params(self) -> list[torch.Tensor]:
        return [p for p in (self.m, self.c, self.beta) if p.requires_grad]

    def pair_values(self, images: ImageSet) -> torch.Tensor:
        """[P] dot-product similarities of the transformed images' distinct pairs."""
        z = images.y @ self.m.T + self.beta
        return self.scale**2 * (self.c**2 * images.residual + pair_dots(z, images.pairs))

    def sims(self, images: ImageSet) -> tuple[torch.Tensor, torch.Tensor]:
        """Triplet similarities [m, 3] [s01, s02, s12] and anchor similarities [m_a, 2] [s_hc, s_hf]."""
        values = self.pair_values(images)
        return values[images.of_triplet], values[images.of_anchor]

    def regulariser(self) -> torch.Tensor:
        """||W - mean(diag W) I||_F^2 + ||b||^2 without forming W (the two blocks are orthogonal).

        The offset is pulled to zero too: an unpenalised b adds a free per-image score b . W(x_a + x_b)
        to every similarity, which overfits when a study has few triplets per image.
        """
        r = self.m.shape[0]
        mean_diag = self.scale * (self.c * (self.dim - r) + self.m.diagonal().sum()) / self.dim
        inside = ((self.scale * self.m - mean_diag * torch.eye(r)) ** 2).sum()
        offset = (self.scale * self.beta).square().sum()
        return inside + (self.scale * self.c - mean_diag) ** 2 * (self.dim - r) + offset

    def factors(self) -> LowRankAffine:
        """The fitted map in factors: W = s c I + V s (M - c I) V^T and b = s V beta, never W itself."""
        with torch.no_grad():
            s, c = self.scale, float(self.c)
            core = s * (self.m - c * torch.eye(self.m.shape[0]))
            return LowRankAffine(
                self.basis.numpy().astype(np.float32),
                core.numpy().astype(np.float32),
                s * c,
                (s * (self.basis @ self.beta)).numpy().astype(np.float32),
            )


@dataclass(frozen=True, eq=False)
class LowRankAffine:
    """z = W x + b with W = identity_scale * I + basis @ core @ basis.T: the teacher's map kept as O(D r)
    numbers. W itself is D x D (22,784 dims: 2 GB per copy, and forming it took several copies), while the
    fit only ever moves it on the r principal directions of the training images."""

    basis: np.ndarray  # [D, r] orthonormal columns
    core: np.ndarray  # [r, r] W - identity_scale * I on span(basis), in the basis' coordinates
    identity_scale: float
    bias: np.ndarray  # [D]

    @property
    def dim(self) -> int:
        return self.basis.shape[0]

    def apply(self, x: np.ndarray) -> np.ndarray:
        """float32 [n, D] embeddings of standardised features x [n, D], in O(n D r) time and O(n D) memory."""
        z = ((x @ self.basis) @ self.core.T) @ self.basis.T
        z += self.identity_scale * x
        z += self.bias
        return z.astype(np.float32, copy=False)


class LocalTerm:
    """gLocal's neighbourhood term on a fixed subset of training images (backbone side precomputed)."""

    def __init__(self, x: torch.Tensor, basis: torch.Tensor, tau: float):
        self.y = x @ basis
        resid = x - self.y @ basis.T
        self.resid_gram = resid @ resid.T
        self.reference_cosine = cosine_matrix(x)
        self.tau = tau

    def __call__(self, transform: AffineTransform) -> torch.Tensor:
        z = self.y @ transform.m.T + transform.beta
        gram = transform.scale**2 * (transform.c**2 * self.resid_gram + z @ z.T)
        norms = gram.diagonal().clamp_min(1e-12).sqrt()
        cosine = gram / norms[:, None] / norms[None, :]
        return local_neighbourhood_loss(self.reference_cosine, cosine, self.tau)


class Objective:
    """(1 - alpha) * data loss + alpha * local term + lambda * regulariser, on all or some triplets."""

    def __init__(
        self,
        transform: AffineTransform,
        train: ImageSet,
        reg_weight: float,
        local_weight: float = 0.0,
        local: LocalTerm | None = None,
    ):
        self.transform, self.train = transform, train
        self.reg_weight, self.local_weight, self.local = reg_weight, local_weight, local

    def __call__(self, images: ImageSet | None = None) -> torch.Tensor:
        images = images or self.train
        loss = images.data_loss(self.transform.pair_values(images))
        if self.local is not None and self.local_weight > 0:
            loss = (1 - self.local_weight) * loss + self.local_weight * self.local(self.transform)
        return loss + self.reg_weight * self.transform.regulariser()

    def data_loss(self, images: ImageSet) -> float:
        """The unregularised data loss on other triplets (validation), without gradients."""
        with torch.no_grad():
            return float(images.data_loss(self.transform.pair_values(images)))
