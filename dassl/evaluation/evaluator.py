"""``EvaluatorBase`` and the ``Classification`` evaluator, whose printed lines result parsers read."""
from __future__ import annotations

import logging
import os.path as osp
from collections import OrderedDict, defaultdict

import torch

from dassl.utils.distributed import all_gather_objects, get_rank, is_distributed
from dassl.utils.errors import NonFiniteError
from dassl.utils.torchtools import atomic_torch_save

from .build import EVALUATOR_REGISTRY
from .classification_metrics import confusion_matrix, macro_f1_score

__all__ = ["EvaluatorBase", "Classification"]

logger = logging.getLogger(__name__)


class EvaluatorBase:
    """Accumulate predictions with ``process``; ``evaluate`` returns an OrderedDict of metrics."""

    def __init__(self, cfg):
        self.cfg = cfg

    def reset(self) -> None:
        raise NotImplementedError

    def process(self, mo: torch.Tensor, gt: torch.Tensor) -> None:
        raise NotImplementedError

    def evaluate(self) -> OrderedDict:
        raise NotImplementedError


@EVALUATOR_REGISTRY.register()
class Classification(EvaluatorBase):
    """Accuracy, error, macro-F1, and optionally per-class accuracy and the confusion matrix.

    Images whose logits hold NaN or inf are counted, and ``evaluate`` refuses to report a result
    when there is any: ``argmax`` of NaN logits picks class 0, which would pass for an accuracy.
    """

    def __init__(self, cfg, lab2cname: dict | None = None, **kwargs):
        super().__init__(cfg)
        self._lab2cname = lab2cname
        self._correct = 0
        self._total = 0
        self._per_class_res = defaultdict(list) if cfg.TEST.PER_CLASS_RESULT else None
        self._y_true: list[int] = []
        self._y_pred: list[int] = []
        self._nonfinite = 0

    def reset(self) -> None:
        self._correct = 0
        self._total = 0
        self._nonfinite = 0
        self._y_true = []
        self._y_pred = []
        if self._per_class_res is not None:
            self._per_class_res = defaultdict(list)

    def process(self, mo: torch.Tensor, gt: torch.Tensor) -> None:
        """``mo`` logits ``[B, n_cls]``, ``gt`` labels ``[B]``."""
        self._nonfinite += int((~torch.isfinite(mo).all(dim=1)).sum().item())
        pred = mo.max(1)[1]
        matches = pred.eq(gt).int()
        self._correct += int(matches.sum().item())
        self._total += gt.shape[0]
        self._y_true.extend(gt.detach().cpu().tolist())
        self._y_pred.extend(pred.detach().cpu().tolist())
        if self._per_class_res is not None:
            for label, match in zip(gt.tolist(), matches.tolist()):
                self._per_class_res[label].append(match)

    def gather_from_ranks(self) -> None:
        """Merge every rank's predictions into each rank (a no-op outside a multi-rank group).

        Each rank must have evaluated a disjoint shard; call this once, before ``evaluate``.
        """
        if not is_distributed():
            return
        gathered = all_gather_objects((self._y_true, self._y_pred, self._nonfinite))
        y_true, y_pred, nonfinite = [], [], 0
        for part_true, part_pred, part_nonfinite in gathered:
            y_true.extend(part_true)
            y_pred.extend(part_pred)
            nonfinite += part_nonfinite
        self.reset()
        self._y_true, self._y_pred, self._nonfinite = y_true, y_pred, nonfinite
        self._total = len(y_true)
        self._correct = sum(int(t == p) for t, p in zip(y_true, y_pred))
        if self._per_class_res is not None:
            for t, p in zip(y_true, y_pred):
                self._per_class_res[t].append(int(t == p))

    def evaluate(self) -> OrderedDict:
        if self._nonfinite:
            raise NonFiniteError(
                f"{self._nonfinite:,} of {self._total:,} images got non-finite logits (NaN or inf), so no "
                "accuracy is reported: the model's or the backbone's weights hold NaN/inf, or the logits overflowed"
            )
        results = OrderedDict()
        acc = 100.0 * self._correct / max(self._total, 1)
        err = 100.0 - acc
        macro_f1 = 100.0 * macro_f1_score(self._y_true, self._y_pred)
        results["accuracy"] = acc
        results["error_rate"] = err
        results["macro_f1"] = macro_f1

        for line in (
            "=> result",
            f"* total: {self._total:,}",
            f"* correct: {self._correct:,}",
            f"* accuracy: {acc:.1f}%",
            f"* error: {err:.1f}%",
            f"* macro_f1: {macro_f1:.1f}%",
        ):
            logger.info(line)

        if self._per_class_res is not None:
            results["perclass_accuracy"] = self._log_per_class()

        if self.cfg.TEST.COMPUTE_CMAT:
            labels = sorted(set(self._y_true) | set(self._y_pred))
            cmat = confusion_matrix(self._y_true, self._y_pred, labels)
            cmat = cmat / cmat.sum(dim=1, keepdim=True).clamp(min=1)  # normalize="true": rows sum to 1
            save_path = osp.join(self.cfg.OUTPUT_DIR, "cmat.pt")
            if get_rank() == 0:  # one writer
                atomic_torch_save(cmat.numpy(), save_path)
                logger.info(f"Confusion matrix is saved to {save_path}")
        return results

    def _log_per_class(self) -> float:
        lines = ["=> per-class result"]
        accs = []
        for label in sorted(self._per_class_res):
            res = self._per_class_res[label]
            correct, total = sum(res), len(res)
            acc = 100.0 * correct / total
            accs.append(acc)
            classname = self._lab2cname[label] if self._lab2cname else ""
            lines.append(f"* class: {label} ({classname})\ttotal: {total:,}\tcorrect: {correct:,}\tacc: {acc:.1f}%")
        mean_acc = sum(accs) / len(accs) if accs else 0.0
        lines.append(f"* average: {mean_acc:.1f}%")
        for line in lines:
            logger.info(line)
        return mean_acc
