"""Evaluation of the model being trained: the test loop, the accuracy at initialisation, inference."""
from __future__ import annotations

import logging

import torch
from tqdm import tqdm

from dassl.utils import ConfigError, NonFiniteError

from .distributed import is_distributed, progress_disabled
from .ranks import sum_across_ranks
from .run_state import capture_rng_state, restore_rng_state

__all__ = ["EvaluationMixin"]

logger = logging.getLogger(__name__)


class EvaluationMixin:
    """``test``, ``test_at_start`` and inference for ``SimpleTrainer``: reads its ``cfg``, loaders, evaluator
    and precision, and writes to its TensorBoard writer."""

    @torch.no_grad()
    def test(self, split: str | None = None) -> float:
        """Evaluate on ``split`` (default ``TEST.SPLIT``) and return the first metric (accuracy)."""
        self.set_model_mode("eval")
        self.evaluator.reset()
        split, data_loader = self._evaluation_loader(split)
        logger.info(f"Evaluate on the *{split}* set")

        # Under DDP the loader yields this rank's shard; the evaluator merges the shards.
        for batch in tqdm(data_loader, desc=f"eval {split}", disable=progress_disabled(), leave=False):
            input, label = self.parse_batch_test(batch)
            output = self.model_inference(input)
            self.evaluator.process(output, label)
        if is_distributed():
            self.evaluator.gather_from_ranks()

        try:
            results = self.evaluator.evaluate()
        except NonFiniteError as err:
            raise NonFiniteError(f"Evaluation on the {split} split: {err}") from err
        for k, v in results.items():
            self.write_scalar(f"{split}/{k}", v, self.epoch)
        return list(results.values())[0]

    def _evaluation_loader(self, split: str | None):
        """(split name, its loader) for ``split``, ``TEST.SPLIT`` by default; "val" must exist."""
        if split is None:
            split = self.cfg.TEST.SPLIT
        if split == "val":
            if self.val_loader is None:
                raise ConfigError(
                    f'Cannot evaluate on the val split: dataset "{self.cfg.DATASET.NAME}" has no validation data'
                )
            return split, self.val_loader
        return "test", self.test_loader

    @torch.no_grad()
    def test_at_start(self) -> float:
        """Accuracy of the untrained model on ``TEST.SPLIT``, logged as ``* accuracy at initialisation: X.X%``.

        The RNG state is put back afterwards, so training draws exactly what it draws without this evaluation.
        The evaluator's result block is not printed: a log holding only this figure is not a finished run's.
        """
        rng = capture_rng_state()
        split, data_loader = self._evaluation_loader(None)
        logger.info(f"TEST.AT_START: evaluating the model at initialisation on the {split} split")
        self.set_model_mode("eval")
        correct = total = nonfinite = 0
        for batch in tqdm(data_loader, desc=f"eval {split} at start", disable=progress_disabled(), leave=False):
            input, label = self.parse_batch_test(batch)
            output = self.model_inference(input)
            nonfinite += int((~torch.isfinite(output).all(dim=1)).sum().item())
            correct += int(output.max(1)[1].eq(label).sum().item())
            total += int(label.shape[0])
        correct, total, nonfinite = sum_across_ranks([correct, total, nonfinite])
        restore_rng_state(rng)
        if nonfinite:
            raise NonFiniteError(
                f"Evaluation at initialisation (TEST.AT_START) on the {split} split: {nonfinite:,} of {total:,} "
                "images got non-finite logits (NaN or inf)"
            )
        accuracy = 100.0 * correct / max(total, 1)
        logger.info(f"* accuracy at initialisation: {accuracy:.1f}%")
        self.write_scalar(f"{split}/accuracy_at_initialisation", accuracy, 0)
        return accuracy

    def model_inference(self, *args, **kwargs):
        """``self.inference(...)`` when the trainer defines it, else ``self.model(...)``."""
        with self.autocast():
            if callable(getattr(self, "inference", None)):
                return self.inference(*args, **kwargs)
            return self.model(*args, **kwargs)

    def parse_batch_test(self, batch):
        return batch["img"].to(self.device), batch["label"].to(self.device)
