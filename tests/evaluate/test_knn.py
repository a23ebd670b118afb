"""The weighted k-NN protocol (byol.evaluate.knn)."""

from __future__ import annotations

import math

import numpy as np
import torch

from byol.evaluate import (
    knn_accuracy,
    knn_predict,
)

from .helpers import split_blobs


def test_knn_scores_match_hand_computation():
    # Bank on the unit circle (scaled, to check the L2 normalisation) at known angles.
    angles_deg = [0.0, 30.0, 60.0, 90.0, 180.0, 270.0]
    bank_labels = torch.tensor([0, 0, 1, 1, 0, 1])
    radii = [1.0, 2.0, 0.5, 3.0, 1.0, 4.0]
    bank = torch.tensor(
        [
            [r * math.cos(math.radians(a)), r * math.sin(math.radians(a))]
            for a, r in zip(angles_deg, radii, strict=True)
        ]
    )
    query_angles = [10.0, 200.0]
    queries = torch.tensor(
        [[5 * math.cos(math.radians(a)), 5 * math.sin(math.radians(a))] for a in query_angles]
    )
    temperature = 0.5
    scores = knn_predict(bank, bank_labels, queries, k=3, temperature=temperature)

    def w(delta_deg: float) -> float:
        return math.exp(math.cos(math.radians(delta_deg)) / temperature)

    # Query at 10 deg: nearest are 0 (d=10, class 0), 30 (d=20, class 0), 60 (d=50, class 1).
    # Query at 200 deg: nearest are 180 (d=20, class 0), 270 (d=70, class 1), 90 (d=110, class 1).
    expected = torch.tensor(
        [
            [w(10) + w(20), w(50)],
            [w(20), w(70) + w(110)],
        ]
    )
    assert scores.shape == (2, 2)
    torch.testing.assert_close(scores, expected.float(), rtol=1e-5, atol=1e-5)

    # k larger than the bank is clamped: every bank point votes.
    all_votes = knn_predict(bank, bank_labels, queries[:1], k=100, temperature=temperature)
    deltas = [abs(10.0 - a) for a in angles_deg]
    class0 = sum(w(d) for d, c in zip(deltas, bank_labels.tolist(), strict=True) if c == 0)
    class1 = sum(w(d) for d, c in zip(deltas, bank_labels.tolist(), strict=True) if c == 1)
    torch.testing.assert_close(all_votes, torch.tensor([[class0, class1]]), rtol=1e-5, atol=1e-5)


def test_knn_matches_numpy_reference_and_chunking():
    generator = torch.Generator().manual_seed(3)
    bank = torch.randn(40, 8, generator=generator)
    labels = torch.randint(0, 4, (40,), generator=generator)
    queries = torch.randn(9, 8, generator=generator)
    k, temperature = 7, 0.2

    b = bank.numpy() / np.linalg.norm(bank.numpy(), axis=1, keepdims=True)
    q = queries.numpy() / np.linalg.norm(queries.numpy(), axis=1, keepdims=True)
    sim = q @ b.T
    expected = np.zeros((9, 5))  # num_classes given as 5: an extra, never-voted class
    for i in range(9):
        for j in np.argsort(-sim[i])[:k]:
            expected[i, labels[j]] += np.exp(sim[i, j] / temperature)

    for chunk_size in (1, 4, 1024):
        scores = knn_predict(
            bank,
            labels,
            queries,
            k=k,
            temperature=temperature,
            num_classes=5,
            chunk_size=chunk_size,
        )
        np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-4)


def test_knn_separable_blobs_near_perfect():
    train_x, train_y, test_x, test_y = split_blobs()
    result = knn_accuracy(train_x, train_y, test_x, test_y, k=20, temperature=0.1)
    assert result["top1"] > 0.98
    assert result["top5"] >= result["top1"]
    assert result["k"] == 20
    assert result["n_test"] == test_y.numel()


def test_knn_two_classes_has_no_top5_and_k_is_clamped():
    train_x, train_y, test_x, test_y = split_blobs(num_classes=2)
    result = knn_accuracy(train_x[:10], train_y[:10], test_x, test_y, k=200)
    assert result["top5"] is None
    assert result["k"] == 10
