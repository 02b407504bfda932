"""dassl.evaluation and dassl.metrics: printed lines, macro-F1, per-class results, cmat."""
import logging
import re

import pytest
import torch

from dassl.config import get_cfg_default
from dassl.evaluation import EVALUATOR_REGISTRY, Classification, build_evaluator
from dassl.evaluation.classification_metrics import confusion_matrix, macro_f1_score
from dassl.metrics import compute_accuracy

# The regex CoOp's parse_test_res.py applies to log.txt after "=> result".
ACCURACY_REGEX = re.compile(r"\* accuracy: ([\.\deE+-]+)%")


def _logits_for(preds, n_cls):
    return torch.nn.functional.one_hot(torch.tensor(preds), n_cls).float()


def _evaluator(**test_overrides):
    cfg = get_cfg_default()
    for key, value in test_overrides.items():
        setattr(cfg.TEST, key, value)
    return cfg, build_evaluator(cfg, lab2cname={0: "cat", 1: "dog", 2: "fox"})


def test_printed_lines_parse_like_parse_test_res(caplog):
    _, evaluator = _evaluator()
    assert isinstance(evaluator, Classification) and "Classification" in EVALUATOR_REGISTRY
    evaluator.process(_logits_for([0, 1, 2, 2], 3), torch.tensor([0, 1, 1, 2]))
    evaluator.process(_logits_for([0, 0, 1, 2], 3), torch.tensor([0, 0, 1, 2]))
    with caplog.at_level(logging.INFO, logger="dassl"):
        results = evaluator.evaluate()
    assert list(results) == ["accuracy", "error_rate", "macro_f1"]
    assert results["accuracy"] == pytest.approx(87.5)
    lines = [r.getMessage() for r in caplog.records]
    start = lines.index("=> result")
    assert lines[start : start + 6] == [
        "=> result",
        "* total: 8",
        "* correct: 7",
        "* accuracy: 87.5%",
        "* error: 12.5%",
        f"* macro_f1: {results['macro_f1']:.1f}%",
    ]
    parsed = [float(m.group(1)) for line in lines[start:] if (m := ACCURACY_REGEX.search(line))]
    assert parsed == [87.5]


def test_macro_f1_matches_hand_computation():
    y_true = [0, 0, 1, 1, 2]
    y_pred = [0, 1, 1, 1, 0]
    # class 0: tp1 fp1 fn1 -> 0.5; class 1: tp2 fp1 fn0 -> 0.8; class 2: tp0 fp0 fn1 -> 0
    assert macro_f1_score(y_true, y_pred) == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    # Only labels present in y_true count (a predicted-only label 3 is ignored).
    assert macro_f1_score([0, 0], [0, 3]) == pytest.approx(2 / 3)
    cmat = confusion_matrix(y_true, y_pred, [0, 1, 2])
    assert cmat.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]


def test_per_class_result_and_cmat(tmp_path, caplog):
    cfg, evaluator = _evaluator(PER_CLASS_RESULT=True, COMPUTE_CMAT=True)
    cfg.OUTPUT_DIR = str(tmp_path)
    evaluator.process(_logits_for([0, 1, 1, 2], 3), torch.tensor([0, 0, 1, 2]))
    with caplog.at_level(logging.INFO, logger="dassl"):
        results = evaluator.evaluate()
    assert results["perclass_accuracy"] == pytest.approx((50.0 + 100.0 + 100.0) / 3)
    messages = [r.getMessage() for r in caplog.records]
    assert "=> per-class result" in messages
    assert "* class: 0 (cat)\ttotal: 2\tcorrect: 1\tacc: 50.0%" in messages
    cmat = torch.load(tmp_path / "cmat.pt", weights_only=False)
    assert cmat.tolist() == [[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]

    evaluator.reset()
    evaluator.process(_logits_for([2], 3), torch.tensor([2]))
    assert evaluator.evaluate()["accuracy"] == 100.0


def test_unknown_evaluator_suggests_closest():
    cfg = get_cfg_default()
    cfg.TEST.EVALUATOR = "Clasification"
    with pytest.raises(ValueError, match='did you mean "Classification"'):
        build_evaluator(cfg)


def test_compute_accuracy_topk_and_tuple_output():
    logits = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.1, 0.4], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    target = torch.tensor([1, 2, 0, 0])
    top1, top2 = compute_accuracy((logits, "extra"), target, topk=(1, 2))
    assert top1.shape == (1,) and top1.item() == pytest.approx(50.0)
    assert top2.item() == pytest.approx(75.0)
