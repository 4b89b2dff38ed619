"""hydra/sweeper=navila_optuna on the embedded default: a real two-trial TPE search over optim.lr."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from navila_testing import QUICK_TINY, run_navila, stage_records

pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="pip install 'navila_tune[optuna]'")

SEARCH = ["hydra/sweeper=navila_optuna", "hydra.sweeper.n_trials=2", "optim.lr=interval(1e-3,3e-3)"]


def test_two_trials_reuse_convert_and_preprocess_and_report_the_best(quick_run, tmp_path):
    work = quick_run.copy_work(tmp_path / "work")
    proc = run_navila(tmp_path, "-m", *QUICK_TINY, *SEARCH, f"paths.work_dir={work}", "hydra.sweep.dir=sweep")
    jobs = sorted(p.parent for p in (tmp_path / "sweep").glob("*/summary.json"))
    assert [j.name.split("=")[0] for j in jobs] == ["0_optim.lr", "1_optim.lr"]  # named by the swept value
    lrs = [float(j.name.split("=")[1]) for j in jobs]
    assert all(1e-3 <= lr <= 3e-3 for lr in lrs) and lrs[0] != lrs[1]
    for job in jobs:
        records = stage_records(job)
        assert records["convert"]["status"] == records["preprocess"]["status"] == "reused"
        assert [records[s]["status"] for s in ("train", "generate", "evaluate", "export")] == ["ran"] * 4
    results = OmegaConf.load(tmp_path / "sweep" / "optimization_results.yaml")
    assert results.best_params["optim.lr"] in lrs
    accuracies = [OmegaConf.load(j / "summary.json").metrics.accuracy for j in jobs]
    assert results.best_value == max(accuracies)  # the study maximizes the returned accuracy
    csv = (tmp_path / "sweep" / "sweep_summary.csv").read_text().splitlines()
    assert csv[0].startswith("rank,job,optim.lr,") and len(csv) == 3
    assert (tmp_path / "sweep" / "sweep_summary.png").stat().st_size > 0
    assert "sweep summary:" in proc.stdout


def test_a_search_space_with_an_invalid_corner_fails_before_any_trial(tmp_path):
    proc = run_navila(tmp_path, "-m", *QUICK_TINY, "hydra/sweeper=navila_optuna", "hydra.sweeper.n_trials=2",
                      "optim.micro_batch_size=choice(16,5)", "paths.work_dir=w", "hydra.sweep.dir=sweep",
                      check=False)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "1 of the sweep's points are invalid; nothing was run" in proc.stderr
    assert "optim.micro_batch_size=5" in proc.stderr
    assert not (tmp_path / "w").exists() and not list((tmp_path / "sweep").glob("*/summary.json"))
