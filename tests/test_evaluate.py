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
    m = evaluate.classification_metrics(labels, preds, probs, CLASSES)
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


class TiedLogits(torch.nn.Module):
    """A CIFAR-10-sized model whose logits tie at the top for every image, as bf16 logits often do: the image's
    label and the class four after it share the highest logit. One prediction per image must still hold."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        labels = x[:, 0, 0, 0].round().long()  # the label, written into the first pixel by the test
        rows = torch.arange(x.shape[0])
        logits = torch.zeros(x.shape[0], 10)
        logits[rows, labels] = 1.0
        logits[rows, (labels + 4) % 10] = 1.0
        return logits


def test_tied_logits_give_one_prediction_per_image():
    """Under bf16, topk (top-1) and argmax (confusion matrix) broke ties two ways, so accuracy and the confusion
    matrix's diagonal disagreed in one test.json (0.7508 vs 0.7512); every metric now reads one predicted
    label per image, and ties go to the lower class index."""
    from cifarkit.data import Split
    from cifarkit.loader import DeviceLoader, Normalizer

    labels = torch.arange(100) % 10
    images = torch.zeros(100, 3, 4, 4, dtype=torch.uint8)
    images[:, 0, 0, 0] = labels.to(torch.uint8)
    identity = Normalizer((0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255), torch.device("cpu"))  # x = the uint8 value
    loader = DeviceLoader(Split(images, labels), 16, identity)
    classes = tuple(f"c{i}" for i in range(10))
    r = evaluate.evaluate(TiedLogits(), loader, torch.device("cpu"), classes, per_image=True)
    cm = np.array(r["confusion_matrix"])
    assert r["accuracy"] == np.trace(cm) / r["n"]  # exactly
    assert r["recall_score"] == pytest.approx(r["accuracy"])  # balanced classes: macro recall is accuracy
    assert int(r["correct"].sum()) / r["n"] == r["accuracy"]
    assert list(r["per_class_accuracy"].values()) == [float(cm[i, i] / cm[i].sum()) for i in range(10)]
    # labels 0-5 come before their tied partner (4-9), labels 6-9 after theirs (0-3)
    assert r["accuracy"] == 0.6 and r["top5_accuracy"] == 1.0


def test_predicted_labels_break_ties_to_the_lower_index_like_the_ranking():
    logits = torch.tensor([[0.0, 1.0, 1.0, 1.0], [2.0, 2.0, 0.0, 2.0]])
    assert evaluate.predicted_labels(logits).tolist() == [1, 0]
    assert evaluate.ranked_classes(logits).tolist() == [[1, 2, 3, 0], [0, 1, 3, 2]]
    assert evaluate.topk_correct(logits, torch.tensor([2, 3]), ks=(1, 2, 3)) == {1: 0, 2: 1, 3: 2}


@pytest.mark.parametrize(
    "fixed,broken",
    [(4, 0), (5, 0), (6, 0), (0, 6), (7, 1), (8, 1), (14, 10), (24, 4), (30, 14), (31, 14), (120, 79), (121, 79),
     (130, 90), (140, 90), (300, 250), (300, 240)],
)  # fmt: skip
def test_paired_test_matches_mcnemar_exact_near_the_boundary(fixed, broken):
    """The paired test is McNemar's: exact binomial at small counts (4-0 is p = 0.125, 5-0 p = 0.0625, both
    noise; the normal form without correction called them beyond noise), continuity-corrected above."""
    from scipy.stats import binomtest

    exact = binomtest(min(fixed, broken), fixed + broken, 0.5).pvalue
    p = stats.paired_p_value(fixed, broken)
    if fixed + broken < stats.EXACT_BELOW:
        assert p == pytest.approx(exact, rel=1e-9)
    else:
        assert p == pytest.approx(exact, abs=0.004)  # the corrected normal form tracks the exact test here
    assert stats.paired_is_noise(fixed, broken) == (exact >= 0.0455)
    assert stats.paired_is_noise(fixed, broken) == stats.paired_is_noise(broken, fixed)


def test_paired_test_with_nothing_discordant_is_noise():
    assert stats.paired_p_value(0, 0) == 1.0 and stats.paired_is_noise(0, 0)


def test_tied_logits_give_one_label_per_image_through_every_entry_point(tmp_path):
    """evaluate (what deploy-bench's rows and notebooks read), predict's top-k and the TTA table all name the
    same prediction for an image whose top logits tie: the lower class index."""
    from cifarkit.data import Split
    from cifarkit.loader import Normalizer
    from cifarkit.predict import Predictor, topk_entries

    labels = torch.arange(100) % 10
    images = torch.zeros(100, 3, 4, 4, dtype=torch.uint8)
    images[:, 0, 0, 0] = labels.to(torch.uint8)
    cpu = torch.device("cpu")
    identity = Normalizer((0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255), cpu)
    classes = [f"c{i}" for i in range(10)]
    predictor = Predictor(TiedLogits(), classes, identity, 4, cpu, {"config": {"amp": "off"}}, tmp_path / "tied.pt")
    split = Split(images, labels)
    scored = predictor.evaluate(split, report=False, per_image=True)
    first = [row for row in predictor.compare_tta(split) if row["mode"] == "none"][0]
    assert scored["accuracy"] == first["accuracy"] == 0.6
    probs = predictor.probabilities(images.numpy(), "none")
    top1 = [topk_entries(p, classes, 3)[0]["class"] for p in probs]
    assert top1 == [classes[int(i)] for i in evaluate.predicted_labels(probs)]
    assert top1[:10] == ["c0", "c1", "c2", "c3", "c4", "c5", "c0", "c1", "c2", "c3"]  # 6-9 tie with 0-3: the lower wins
    right = torch.tensor([c == classes[int(y)] for c, y in zip(top1, labels, strict=True)])
    assert torch.equal(right, scored["correct"].cpu())  # the same images right in predict as in evaluate
