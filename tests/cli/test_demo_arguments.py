"""``lpcam demo``'s arguments: a bad value is refused in one line before any work starts."""
from __future__ import annotations

from pathlib import Path

import pytest

from lpcam_plugin.benchmark.training import TrainConfig
from lpcam_plugin.cli import main


def _error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_an_empty_out_is_refused_and_nothing_is_written_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--out", "", "--no-figures"]) == 2
    assert "lpcam demo: error: argument --out: an empty path" in _error_line(capsys)
    assert list(tmp_path.iterdir()) == []


def test_an_out_that_is_a_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    report = tmp_path / "report.md"
    report.write_text("mine")
    assert main(["demo", "--out", str(report)]) == 2
    assert "is a file, not a folder" in _error_line(capsys)
    assert report.read_text() == "mine"


@pytest.mark.parametrize("flag", ["--epochs", "--seeds", "--num-images"])
@pytest.mark.parametrize("value", ["0", "-3", "two"])
def test_counts_must_be_positive_integers(flag: str, value: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    assert main(["demo", "--out", str(tmp_path / "out"), flag, value]) == 2
    line = _error_line(capsys)
    assert line.startswith(f"lpcam demo: error: argument {flag}:") and "(see lpcam demo --help)" in line
    assert not (tmp_path / "out").exists()


def test_the_training_schedule_refuses_what_it_cannot_run() -> None:
    with pytest.raises(ValueError, match="epochs must be a positive int, got 0"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        TrainConfig(batch_size=2.5)
    with pytest.raises(ValueError, match="lr must be a positive number"):
        TrainConfig(lr=float("nan"))
    with pytest.raises(ValueError, match="weight_decay must be a number >= 0"):
        TrainConfig(weight_decay=-1e-4)


def test_help_and_version_return_zero(capsys: pytest.CaptureFixture) -> None:
    assert main(["--version"]) == 0
    assert main(["demo", "--help"]) == 0
    assert "usage: lpcam demo" in capsys.readouterr().out
