"""Each loss against a value computed by hand from its definition."""
from __future__ import annotations

import math

import pytest
import torch

from registry.training.losses import (
    TRIPLET_MARGIN,
    hard_loss,
    sare_ind,
    sare_joint,
    soft_cross_entropy,
    soft_kl,
    triplet,
)

# anchor a, positive p, negatives n1, n2 (unit vectors): s_ap = 0.6, s_an1 = 0.8, s_an2 = 0.0
A = torch.tensor([[1.0, 0.0]])
P = torch.tensor([[0.6, 0.8]])
N = torch.tensor([[[0.8, 0.6], [0.0, 1.0]]])
T = 0.1


def test_sare_ind_is_the_mean_two_way_softmax_loss_per_negative():
    # n1: -log(e^6 / (e^6 + e^8)) = log(1 + e^2) = 2.126928; n2: log(1 + e^-6) = 0.002476
    expected = (math.log(1 + math.exp(2)) + math.log(1 + math.exp(-6))) / 2
    assert expected == pytest.approx(1.064702, abs=1e-6)
    assert sare_ind(A, P, N, temperature=T).item() == pytest.approx(expected, rel=1e-6)


def test_sare_joint_is_one_softmax_over_positive_and_all_negatives():
    # -log(e^6 / (e^6 + e^8 + e^0)) = log(1 + e^2 + e^-6) = 2.127224
    expected = math.log(1 + math.exp(2) + math.exp(-6))
    assert expected == pytest.approx(2.127224, abs=1e-6)
    assert sare_joint(A, P, N, temperature=T).item() == pytest.approx(expected, rel=1e-6)


def test_triplet_uses_euclidean_distances_and_margin_sqrt_point_one():
    # d_ap = sqrt(0.8), d_an1 = sqrt(0.4), d_an2 = sqrt(2); the second negative is beyond the margin
    d_ap, d_an1 = math.sqrt(0.8), math.sqrt(0.4)
    expected = (d_ap - d_an1 + math.sqrt(0.1) + 0.0) / 2
    assert expected == pytest.approx(0.289100, abs=1e-6)
    assert TRIPLET_MARGIN == pytest.approx(math.sqrt(0.1))
    assert triplet(A, P, N).item() == pytest.approx(expected, rel=1e-6)


def test_losses_average_over_tuples():
    two = [torch.cat([x, x]) for x in (A, P, N)]
    for fn in (sare_ind, sare_joint, triplet):
        assert fn(*two, temperature=T).item() == pytest.approx(fn(A, P, N, temperature=T).item(), rel=1e-6)


def test_soft_cross_entropy_against_the_teacher_distribution():
    # teacher softmax [1/4, 3/4], student uniform: -(1/4 ln 1/2 + 3/4 ln 1/2) = ln 2
    teacher = torch.tensor([[0.0, math.log(3.0)]])
    student = torch.zeros(1, 2, requires_grad=True)
    loss = soft_cross_entropy(student, teacher)
    assert loss.item() == pytest.approx(math.log(2), rel=1e-6)
    loss.backward()  # d/dz = softmax(student) - target = [0.5 - 0.25, 0.5 - 0.75]
    assert student.grad[0].tolist() == pytest.approx([0.25, -0.25])


def test_soft_kl_is_the_soft_cross_entropy_minus_the_teachers_entropy_with_the_same_gradient():
    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(5, 7, generator=g, dtype=torch.float64)
    student = torch.randn(5, 7, generator=g, dtype=torch.float64)
    q = torch.softmax(teacher, dim=1)
    entropy = -(q * q.log()).sum(1).mean()
    s_kl, s_ce = student.clone().requires_grad_(True), student.clone().requires_grad_(True)
    kl, ce = soft_kl(s_kl, teacher), soft_cross_entropy(s_ce, teacher)
    assert kl.item() == pytest.approx((ce - entropy).item(), rel=1e-12) and kl.item() > 0
    kl.backward()
    ce.backward()
    torch.testing.assert_close(s_kl.grad, s_ce.grad, rtol=1e-12, atol=1e-15)
    assert soft_kl(teacher, teacher).item() == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="same shape"):
        soft_kl(student[:3], teacher)


def test_bad_shapes_and_unknown_names_are_rejected():
    with pytest.raises(ValueError, match="negatives"):
        sare_ind(A, P, N[0])
    with pytest.raises(ValueError, match="sare_ind"):
        hard_loss("contrastive")
