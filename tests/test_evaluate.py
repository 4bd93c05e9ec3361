"""cifarkit.metrics checked against scikit-learn (and by hand) on random predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from cifarkit import evaluate
from cifarkit.report import stats

CLASSES = [f"c{i}" for i in range(7)]


@pytest.fixture(params=[0, 1, 2])
def predictions(request) -> tuple[np.ndarray, np.ndarray]:
    """Labels and softmax probabilities, correlated so that accuracy sits well between 0 and 1."""
    rng = np.random.default_rng(request.param)
    labels = rng.integers(0, len(CLASSES), 500)
    logits = rng.normal(size=(500, len(CLASSES))) + 1.5 * np.eye(len(CLASSES))[labels]
    probs = torch.softmax(torch.from_numpy(logits).float(), dim=1).numpy()
    return labels, probs


def test_topk_matches_sklearn(predictions):
    labels, probs = predictions
    hits = evaluate.topk_correct(torch.from_numpy(probs), torch.from_numpy(labels), ks=(1, 3, 5))
    for k in (1, 3, 5):
        expected = skm.top_k_accuracy_score(labels, probs, k=k, labels=range(len(CLASSES)), normalize=False)
        assert hits[k] == expected
    assert hits[1] < hits[3] < hits[5] < len(labels)


def test_topk_caps_k_at_the_class_count():
    logits, labels = torch.randn(20, 3), torch.randint(0, 3, (20,))
    assert evaluate.topk_correct(logits, labels, ks=(1, 5))[5] == 20


def test_classification_metrics_match_sklearn(predictions):
    labels, probs = predictions
    preds = probs.argmax(axis=1)
    m = evaluate.classification_metrics(labels, probs, CLASSES)
    assert m["f1_score"] == pytest.approx(skm.f1_score(labels, preds, average="macro"))
    assert m["precision_score"] == pytest.approx(skm.precision_score(labels, preds, average="macro"))
    assert m["recall_score"] == pytest.approx(skm.recall_score(labels, preds, average="macro"))
    assert m["auc_score"] == pytest.approx(skm.roc_auc_score(labels, probs, multi_class="ovr"), abs=1e-6)
    per_class_recall = skm.recall_score(labels, preds, average=None)
    assert list(m["per_class_accuracy"].values()) == pytest.approx(list(per_class_recall))
    cm = np.array(m["confusion_matrix"])
    assert (cm == skm.confusion_matrix(labels, preds)).all() and cm.sum() == len(labels)


def test_most_confused_is_the_largest_off_diagonal_cells(predictions):
    labels, probs = predictions
    cm = evaluate.confusion_matrix(labels, probs.argmax(axis=1), len(CLASSES))
    pairs = evaluate.most_confused(cm, CLASSES, n=5)
    by_hand = sorted(
        ((cm[t, p], t, p) for t in range(len(CLASSES)) for p in range(len(CLASSES)) if t != p), reverse=True
    )[:5]
    assert [p["count"] for p in pairs] == [int(c) for c, _, _ in by_hand]
    assert all(cm[CLASSES.index(p["true"]), CLASSES.index(p["predicted"])] == p["count"] for p in pairs)


def test_confusion_matrix_keeps_classes_never_seen():
    cm = evaluate.confusion_matrix(np.array([0, 0, 1]), np.array([0, 1, 1]), num_classes=4)
    assert cm.shape == (4, 4) and cm.tolist()[0] == [1, 1, 0, 0] and cm[2:].sum() == 0


def test_auc_is_none_when_a_class_is_absent():
    probs = np.full((4, 3), 1 / 3)
    assert evaluate.auc_ovr(np.array([0, 1, 0, 1]), probs) is None


def test_standard_error_and_noise():
    assert stats.standard_error(0.7, 2000) == pytest.approx(0.01025, abs=1e-5)
    assert stats.difference_is_noise(0.70, 2000, 0.71, 2000)  # 1 point on 2,000 images: noise
    assert not stats.difference_is_noise(0.70, 10000, 0.75, 10000)
