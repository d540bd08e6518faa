"""The probe's classification metrics: scikit-learn's numbers, without importing sklearn.metrics."""

import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score, recall_score

from al_core.learn.metrics import classification_metrics


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize("seed", range(12))
def test_metrics_equal_scikit_learn_s(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 12))
    n = int(rng.integers(1, 60))
    present = rng.choice(k, size=max(1, k // 2), replace=False)  # some classes never labelled
    y = rng.choice(present, size=n)
    pred = np.where(rng.random(n) < 0.6, y, rng.integers(0, k, n))  # some classes never predicted either
    ks = list(range(k))
    m = classification_metrics(y, pred, k)
    assert m.accuracy == pytest.approx(accuracy_score(y, pred))
    assert m.balanced_accuracy == pytest.approx(balanced_accuracy_score(y, pred))
    assert m.macro_f1 == pytest.approx(f1_score(y, pred, average="macro", zero_division=0))  # labelled or predicted
    assert np.allclose(m.per_class_recall, recall_score(y, pred, labels=ks, average=None, zero_division=0))
    assert np.array_equal(m.confusion, confusion_matrix(y, pred, labels=ks))


def test_metrics_refuse_bad_input():
    with pytest.raises(ValueError, match="at least one"):
        classification_metrics(np.array([], int), np.array([], int), 3)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        classification_metrics(np.array([0, 3]), np.array([0, 1]), 3)
    with pytest.raises(ValueError, match="shape"):
        classification_metrics(np.array([0, 1]), np.array([0]), 3)


def test_evaluation_imports_no_sklearn_metrics():
    code = "import sys, al_core.loop.evaluation, al_core.learn.metrics; print('sklearn.metrics' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
