"""Generation metrics (flowmo.metrics.generation): Inception Score, precision/recall, Frechet of
features, sFID features. Expected values are worked by hand or computed by an independent
formulation (scipy's entropy, brute-force distance matrices from scipy's cdist)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import cdist
from scipy.special import softmax
from scipy.stats import entropy

from flowmo.metrics.generation import (
    SPATIAL_DIM,
    frechet_distance_of_features,
    inception_features,
    inception_score,
    inception_score_from_logits,
    precision_recall,
)
from flowmo.nets.inception import FIDInceptionV3

# ---------------------------------------------------------------- Inception Score


def test_is_uniform_predictions_is_one():
    p = np.full((37, 10), 0.1)
    assert inception_score(p) == pytest.approx((1.0, 0.0), abs=1e-12)
    assert inception_score_from_logits(np.zeros((37, 10))).mean == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("c", [2, 5, 1008])
def test_is_one_hot_spread_evenly_is_c(c):
    p = np.eye(c)[np.arange(3 * c) % c]  # each class 3 times
    assert inception_score(p).mean == pytest.approx(c, rel=1e-12)
    # 3 groups of the given order (no shuffle), each one full cycle of the classes: every group scores C
    assert inception_score(p, splits=3, shuffle_seed=None) == pytest.approx((c, 0.0), rel=1e-12, abs=1e-9)


def test_is_hand_worked_two_classes():
    # p1 = (1, 0), p2 = (1/2, 1/2): p(y) = (3/4, 1/4)
    # KL1 = log(4/3); KL2 = 1/2 log(2/3) + 1/2 log 2 = 1/2 log(4/3); mean = 3/4 log(4/3)
    p = np.array([[1.0, 0.0], [0.5, 0.5]])
    assert inception_score(p).mean == pytest.approx((4 / 3) ** 0.75, rel=1e-14)
    assert inception_score(torch.tensor(p, dtype=torch.float32)).mean == pytest.approx((4 / 3) ** 0.75, rel=1e-6)


def test_is_groups_mean_and_population_std():
    # group 1 uniform (IS 1), group 2 one-hot over 2 classes (IS 2): mean 1.5, std 0.5
    p = np.array([[0.5, 0.5], [0.5, 0.5], [1.0, 0.0], [0.0, 1.0]])
    assert inception_score(p, splits=2, shuffle_seed=None) == pytest.approx((1.5, 0.5), rel=1e-14)


def test_is_uneven_groups_follow_reference_slicing():
    # N = 5, splits = 2: groups [0, 2) and [2, 5) (i N // k) of the given order
    p = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.5, 0.5], [0.5, 0.5]])
    assert inception_score(p, splits=2, shuffle_seed=None) == pytest.approx((1.5, 0.5), rel=1e-14)
    # by default the groups are cut from the rows in RandomState(2020).permutation(5) order
    order = np.random.RandomState(2020).permutation(5)
    assert inception_score(p, splits=2) == pytest.approx(inception_score(p[order], splits=2, shuffle_seed=None),
                                                         rel=1e-14)


@settings(max_examples=30)
@given(st.integers(1, 40), st.integers(2, 12), st.integers(0, 2**31 - 1), st.integers(1, 4))
def test_is_matches_scipy_entropy(n, c, seed, splits):
    splits = min(splits, n)
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=3.0, size=(n, c))
    p = softmax(logits, axis=1)
    shuffled = p[np.random.RandomState(2020).permutation(n)]  # torch-fidelity's samples_shuffle, rng_seed 2020
    scores = []
    for i in range(splits):
        part = shuffled[i * n // splits:(i + 1) * n // splits]
        marginal = part.mean(axis=0)
        scores.append(math.exp(np.mean([entropy(row, marginal) for row in part])))
    got = inception_score(p, splits=splits)
    assert got.mean == pytest.approx(np.mean(scores), rel=1e-9)
    assert got.std == pytest.approx(np.std(scores), rel=1e-6, abs=1e-9)
    from_logits = inception_score_from_logits(logits, splits=splits)
    assert from_logits.mean == pytest.approx(np.mean(scores), rel=1e-9)


def _closed_form_one_hot_is(classes: np.ndarray, splits: int) -> list:
    """IS of exactly one-hot predictions, per group of consecutive rows: exp of the entropy of the
    group's class frequencies (KL(onehot_c || q) = -log q_c, averaged over the group = H(q))."""
    out = []
    n = len(classes)
    for i in range(splits):
        _, counts = np.unique(classes[i * n // splits:(i + 1) * n // splits], return_counts=True)
        q = counts / counts.sum()
        out.append(math.exp(-(q * np.log(q)).sum()))
    return out


@pytest.mark.parametrize("c, per_class, splits", [(10, 20, 2), (100, 20, 10)])
def test_is_groups_of_class_ordered_rows_come_from_a_seeded_shuffle(c, per_class, splits):
    # a perfect classifier over images listed class by class (a folder written per class)
    classes = np.repeat(np.arange(c), per_class)
    p = np.eye(c)[classes]
    order = np.random.RandomState(2020).permutation(len(classes))
    expected = _closed_form_one_hot_is(classes[order], splits)
    got = inception_score(p, splits=splits)
    assert got.mean == pytest.approx(np.mean(expected), rel=1e-12)
    assert got.std == pytest.approx(np.std(expected), rel=1e-9, abs=1e-12)
    assert got.mean > 0.75 * c  # every group sees (nearly) every class
    # the listing order cut into contiguous groups: each group holds c / splits classes only
    assert inception_score(p, splits=splits, shuffle_seed=None).mean == pytest.approx(c / splits, rel=1e-12)
    # from logits: the same groups (a near one-hot softmax)
    z = 40.0 * p
    assert inception_score_from_logits(z, splits=splits).mean == pytest.approx(np.mean(expected), rel=1e-9)
    # another seed: other groups, the same closed form on its permutation
    other = np.random.RandomState(7).permutation(len(classes))
    assert inception_score(p, splits=splits, shuffle_seed=7).mean == pytest.approx(
        np.mean(_closed_form_one_hot_is(classes[other], splits)), rel=1e-12)


@settings(max_examples=25)
@given(st.integers(2, 30), st.integers(2, 9), st.integers(0, 2**31 - 1))
def test_is_of_one_group_does_not_depend_on_the_row_order(n, c, seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=3.0, size=(n, c))
    perm = rng.permutation(n)
    assert inception_score_from_logits(logits[perm]).mean == pytest.approx(inception_score_from_logits(logits).mean,
                                                                           rel=1e-12)
    p = softmax(logits, axis=1)
    assert inception_score(p[perm]).mean == pytest.approx(inception_score(p).mean, rel=1e-12)


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, True, "1"])
def test_is_bad_shuffle_seed_is_refused_naming_it(seed):
    with pytest.raises(ValueError, match="shuffle_seed must be None or an int in"):
        inception_score(np.eye(3), splits=2, shuffle_seed=seed)
    with pytest.raises(ValueError, match="shuffle_seed must be None or an int in"):
        inception_score_from_logits(np.eye(3), splits=2, shuffle_seed=seed)


def test_is_bad_input():
    with pytest.raises(ValueError, match="probabilities must be 2-D"):
        inception_score(np.ones(3) / 3)
    with pytest.raises(ValueError, match="non-negative"):
        inception_score(np.array([[1.5, -0.5]]))
    with pytest.raises(ValueError, match="sum to 1"):
        inception_score(np.array([[0.5, 0.4]]))
    with pytest.raises(ValueError, match="non-finite"):
        inception_score(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="splits"):
        inception_score(np.eye(3), splits=4)
    with pytest.raises(ValueError, match="splits"):
        inception_score(np.eye(3), splits=0)
    with pytest.raises(TypeError, match="probabilities must be a numpy array"):
        inception_score([[0.5, 0.5]])
    with pytest.raises(TypeError, match="real numbers"):
        inception_score(np.eye(2, dtype=bool))


# ---------------------------------------------------------------- precision / recall


def _brute_force_pr(real, gen, k):
    """Independent formulation: full distance matrices (scipy cdist), the k-th nearest other
    point found by sorting each row without its own entry."""
    def radii(x):
        d = cdist(x, x)
        np.fill_diagonal(d, np.inf)
        return np.sort(d, axis=1)[:, k - 1]

    r_real, r_gen = radii(real), radii(gen)
    precision = np.mean((cdist(gen, real) <= r_real[None, :]).any(axis=1))
    recall = np.mean((cdist(real, gen) <= r_gen[None, :]).any(axis=1))
    return precision, recall


def test_pr_identical_sets_are_one():
    x = np.random.default_rng(0).normal(size=(60, 8))
    assert precision_recall(x, x.copy()) == (1.0, 1.0)
    xt = torch.from_numpy(x).float()
    assert precision_recall(xt, xt.clone()) == (1.0, 1.0)


def test_pr_far_apart_sets_are_zero():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(40, 5))
    gen = rng.normal(size=(40, 5)) + 1000.0
    assert precision_recall(real, gen) == (0.0, 0.0)


def test_pr_hand_worked_1d_k1():
    # real 0, 1, 3, 8: radii (nearest other) 1, 1, 2, 5 -> balls [-1,1] [0,2] [1,5] [3,13]
    # gen 0.5, 2.5, 10, 14: 14 is outside [-1, 13]                  -> precision 3/4
    # gen radii 2, 2, 4, 4 -> balls [-1.5,2.5] [0.5,4.5] [6,14] [10,18]: all reals inside -> recall 1
    real = np.array([[0.0], [1.0], [3.0], [8.0]])
    gen = np.array([[0.5], [2.5], [10.0], [14.0]])
    assert precision_recall(real, gen, k=1) == (0.75, 1.0)
    # swapping the roles swaps the figures
    assert precision_recall(gen, real, k=1) == (1.0, 0.75)


def test_pr_boundary_is_inside():
    # real 0, 1 (radii 1): gen 2 lies exactly on the ball of 1 -> inside; 5 outside
    real = np.array([[0.0], [1.0]])
    gen = np.array([[2.0], [5.0]])
    assert precision_recall(real, gen, k=1) == (0.5, 1.0)


def test_pr_duplicates_count_as_neighbours():
    # real 0, 0, 10 with k=1: the radius of each 0 is 0 (its duplicate), of 10 is 10
    real = np.array([[0.0], [0.0], [10.0]])
    gen = np.array([[0.0], [0.5], [5.0], [20.5]])
    # 0 in (radius 0, inclusive); 0.5 in the 10-ball [0, 20]; 5 in; 20.5 out
    assert precision_recall(real, gen, k=1).precision == 0.75


@settings(max_examples=25)
@given(st.integers(2, 30), st.integers(2, 30), st.integers(1, 4), st.integers(1, 3),
       st.integers(0, 2**31 - 1), st.integers(1, 9))
def test_pr_batched_equals_unbatched_and_brute_force(n_real, n_gen, d, k, seed, batch):
    k = min(k, n_real - 1, n_gen - 1)
    rng = np.random.default_rng(seed)
    # small integers: every squared distance is exact in float64, so ties on a radius are
    # decided identically by every blocking and by the brute-force check
    real = rng.integers(-4, 5, size=(n_real, d)).astype(np.float64)
    gen = rng.integers(-4, 5, size=(n_gen, d)).astype(np.float64) + rng.integers(0, 3)
    whole = precision_recall(real, gen, k=k, batch_size=10_000)
    assert precision_recall(real, gen, k=k, batch_size=batch) == whole
    assert whole == pytest.approx(_brute_force_pr(real, gen, k), abs=0)


def test_pr_random_float_features_match_brute_force():
    rng = np.random.default_rng(3)
    real = rng.normal(size=(200, 16))
    gen = rng.normal(size=(150, 16)) * 1.3 + 0.4
    expected = _brute_force_pr(real, gen, 3)
    assert 0.0 < expected[0] < 1.0 and 0.0 < expected[1] < 1.0
    assert precision_recall(real, gen, batch_size=37) == pytest.approx(expected, abs=0)


def test_pr_bad_input():
    x = np.zeros((5, 3))
    with pytest.raises(ValueError, match="dimension"):
        precision_recall(x, np.zeros((5, 4)))
    with pytest.raises(ValueError, match="real_features needs at least 4 rows"):
        precision_recall(np.zeros((3, 3)), x)
    with pytest.raises(ValueError, match="generated_features must be 2-D"):
        precision_recall(x, np.zeros(5))
    with pytest.raises(ValueError, match="k must be"):
        precision_recall(x, x, k=0)
    with pytest.raises(ValueError, match="batch_size"):
        precision_recall(x, x, batch_size=0)
    with pytest.raises(ValueError, match="non-finite"):
        precision_recall(np.full((5, 3), np.inf), x)


# ---------------------------------------------------------------- Frechet of features


def test_frechet_of_features_hand_worked():
    # a: points (0,0), (2,0): mean (1,0), cov diag(2, 0); b: shifted by (0,3): distance = 9
    a = np.array([[0.0, 0.0], [2.0, 0.0]])
    assert frechet_distance_of_features(a, a + [0.0, 3.0]) == pytest.approx(9.0, rel=1e-12)
    # 1-D: N(0, 2) vs N(0, 8) (unbiased covariances): (sqrt 2 - sqrt 8)^2 = 2
    assert frechet_distance_of_features(np.array([[-1.0], [1.0]]), np.array([[-2.0], [2.0]])) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="dimension"):
        frechet_distance_of_features(np.zeros((3, 2)) + np.arange(3)[:, None], np.arange(9.0).reshape(3, 3))


# ---------------------------------------------------------------- Inception features


def test_inception_features_shapes_and_layers():
    torch.manual_seed(0)
    net = FIDInceptionV3().eval()
    images = torch.rand(2, 3, 64, 48) * 2 - 1
    out = inception_features(net, images)
    assert out.pool.shape == (2, 2048)
    assert out.spatial.shape == (2, SPATIAL_DIM) == (2, 2023)
    assert out.logits.shape == (2, 1008)
    assert len(net.Mixed_6d.branch1x1._forward_hooks) == 0  # hook removed
    with torch.no_grad():
        assert torch.equal(out.pool, net(images))
        torch.testing.assert_close(out.logits, out.pool @ net.fc.weight.T)
        # independent path: the layers called one by one up to Mixed_6d's 1x1 branch
        x = net.preprocess(images)
        for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
                     "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a",
                     "Mixed_6b", "Mixed_6c"):
            x = getattr(net, name)(x)
        fmap = net.Mixed_6d.branch1x1(x)
    assert fmap.shape == (2, 192, 17, 17)
    # NHWC flattening of the first 7 channels: index (h * 17 + w) * 7 + c
    expected = torch.stack([fmap[:, c, h, w] for h in range(17) for w in range(17) for c in range(7)], dim=1)
    torch.testing.assert_close(out.spatial, expected, rtol=1e-5, atol=1e-6)


def test_inception_features_refuses_other_networks():
    with pytest.raises(TypeError, match="FIDInceptionV3"):
        inception_features(torch.nn.Identity(), torch.zeros(1, 3, 8, 8))
