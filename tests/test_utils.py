"""dassl.utils: registry, name suggestions, JSON/file helpers, meters, logger."""
import logging
import os
import sys

import pytest
import torch

from dassl.utils import (
    AverageMeter,
    MetricMeter,
    Registry,
    check_availability,
    check_isfile,
    listdir_nohidden,
    read_json,
    set_random_seed,
    setup_logger,
    tolist_if_not,
    write_json,
)


def test_registry_decorator_call_and_duplicates():
    registry = Registry("TOY")

    @registry.register()
    class CoOp:
        pass

    def cocoop():
        return "cocoop"

    registry.register(cocoop)
    assert registry.get("CoOp") is CoOp and registry.get("cocoop") is cocoop
    assert registry.registered_names() == ["CoOp", "cocoop"]
    with pytest.raises(KeyError):
        registry.register(cocoop)
    registry.register(cocoop, force=True)
    with pytest.raises(KeyError, match="GOPro"):
        registry.get("GOPro")


def test_check_availability_lists_names_and_suggests_closest():
    check_availability("CoOp", ["CoOp", "CoCoOp"])
    with pytest.raises(ValueError) as info:
        check_availability("GOPRO", ["CoOp", "CoCoOp", "GOPro", "ZeroshotCLIP"])
    message = str(info.value)
    assert "ZeroshotCLIP" in message and 'did you mean "GOPro"' in message


def test_json_round_trip_and_file_helpers(tmp_path):
    path = tmp_path / "sub" / "split.json"
    write_json({"train": [["a.jpg", 0, "cat"]]}, str(path))
    assert read_json(str(path)) == {"train": [["a.jpg", 0, "cat"]]}
    (tmp_path / ".hidden").write_text("x")
    assert sorted(listdir_nohidden(str(tmp_path))) == ["sub"]
    with pytest.warns(UserWarning, match="No file found"):
        assert not check_isfile(str(tmp_path / "missing.jpg"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        read_json(str(bad))
    assert tolist_if_not(3) == [3] and tolist_if_not([3]) == [3]


def test_set_random_seed_repeats_draws():
    set_random_seed(7)
    first = torch.rand(3)
    set_random_seed(7)
    assert torch.equal(first, torch.rand(3))


def test_meters():
    meter = AverageMeter()
    meter.update(torch.tensor(2.0))
    meter.update(4.0, n=3)
    assert meter.avg == pytest.approx(3.5) and meter.val == 4.0
    metrics = MetricMeter()
    metrics.update({"loss": torch.tensor(1.5), "acc": 50.0})
    metrics.update({"loss": 0.5})
    assert str(metrics) == "loss 0.5000 (1.0000) acc 50.0000 (50.0000)"
    with pytest.raises(TypeError):
        metrics.update([1.0])


@pytest.fixture
def restore_logging():
    """Undo setup_logger's global changes after the test."""
    root = logging.getLogger()
    handlers, level, stdout = list(root.handlers), root.level, sys.stdout
    yield
    setup_logger(None)
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    sys.stdout = stdout


def test_setup_logger_writes_log_and_prints_once(tmp_path, restore_logging, capsys):
    path = setup_logger(str(tmp_path))
    assert path == os.path.join(str(tmp_path), "log.txt")
    logging.getLogger("dassl.test").info("* accuracy: 12.5%")
    print("from a Dassl-style print")
    sys.stdout.flush()
    text = (tmp_path / "log.txt").read_text()
    assert text.count("* accuracy: 12.5%") == 1
    assert text.count("from a Dassl-style print") == 1
    console = capsys.readouterr().out
    assert console.count("* accuracy: 12.5%") == 1 and console.count("from a Dassl-style print") == 1


def test_setup_logger_twice_keeps_the_earlier_log_beside_without_stacking(tmp_path, restore_logging):
    setup_logger(str(tmp_path))
    logging.getLogger("dassl").info("first run")
    second = setup_logger(str(tmp_path))
    assert second == str(tmp_path / "log.txt")  # log.txt is always the latest attempt's
    tagged = [h for h in logging.getLogger().handlers if getattr(h, "_dassl_setup_logger", False)]
    assert len(tagged) == 2  # one console + one file, not four
    logging.getLogger("dassl").info("second run")
    (earlier,) = [p for p in tmp_path.iterdir() if p.name.startswith("log-")]
    assert earlier.read_text() == "first run\n"
    assert (tmp_path / "log.txt").read_text() == "second run\n"


def test_setup_logger_on_other_ranks_writes_no_file(tmp_path, restore_logging, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    assert setup_logger(str(tmp_path / "out")) is None
    logging.getLogger("dassl").info("rank 1 info")
    assert not (tmp_path / "out").exists()
