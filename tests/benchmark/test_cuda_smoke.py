"""``benchmarks/cuda_smoke.py`` stays runnable without a GPU: it says there is none and exits 0, and its
checks run on the CPU (``--device cpu``), so the first GPU finds a script that works."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "cuda_smoke.py"


def _smoke():
    spec = importlib.util.spec_from_file_location("cuda_smoke", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["cuda_smoke"] = module  # spawned DDP workers pickle functions of this module by name
    spec.loader.exec_module(module)
    return module


def test_without_a_gpu_it_says_so_and_exits_0(monkeypatch, capsys) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _smoke().main([]) == 0
    assert "no CUDA device is visible" in capsys.readouterr().out


def test_the_method_checks_run_on_the_cpu_in_float32_and_bf16_autocast(capsys) -> None:
    smoke = _smoke()
    assert smoke.main(["--device", "cpu", "--tiny", "--skip-hosts"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "| ok |" in line]
    for name, _ in smoke.METHOD_CHECKS:
        assert f"| {name} | fp32 | ok |" in out and f"| {name} | bf16 autocast | ok |" in out
    assert len(rows) == 2 * len(smoke.METHOD_CHECKS) and "FAIL" not in out
