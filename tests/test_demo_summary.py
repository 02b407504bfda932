"""The demo's closing summary: one row per trainer for base2new and domain generalization."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import demo  # noqa: E402


def _write(tree: Path, task: str, tables: list) -> None:
    (tree / task).mkdir(parents=True)
    (tree / task / "results.json").write_text(json.dumps({"tables": tables}))


def test_summary_has_a_row_per_trainer_and_marks_missing_runs(tmp_path):
    _write(tmp_path, "base2new", [
        {"trainer": "CoOp", "average": {"base": 60.0, "new": 40.0, "hm": 48.0}},
        {"trainer": "GOPro", "average": {"base": 70.0, "new": 50.0, "hm": 58.333}},
    ])
    rows = [{"dataset": "world", "role": "source", "accuracy": {"mean": 44.0}},
            {"dataset": "world_sketch", "role": "target", "accuracy": {"mean": 20.0}}]
    _write(tmp_path, "domain-generalization", [
        {"trainer": "CoOp", "source": "world", "rows": rows, "target_average": 20.0},
        {"trainer": "GOPro", "source": "world", "rows": rows[:1], "target_average": None},
    ])
    text = demo.summary(str(tmp_path))
    assert "| GOPro | 70.00 | 50.00 | 58.33 |" in text
    assert "| Trainer | world (source) | world_sketch | target avg |" in text
    assert "| CoOp | 44.00 | 20.00 | 20.00 |" in text
    assert "| GOPro | 44.00 | — | — |" in text
