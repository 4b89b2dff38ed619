"""The launcher works from a built wheel (conf/ and the assets ship inside it), not only from the repo."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from navila_testing import PINNED_PATHS, REPO


def test_setup_cfg_lists_every_package():
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "navila_tune").rglob("__init__.py")}
    assert found | {"navila_tune.conf"} == listed


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(out), str(REPO)], check=True, capture_output=True)
    (whl,) = out.glob("navila_tune-*.whl")
    return whl


def test_wheel_ships_configs_flag_reference_and_assets(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in ("navila_tune/conf/config.yaml", "navila_tune/conf/experiment/cot_8b.yaml",
                     "navila_tune/conf/model/llama3_8b.yaml", "navila_tune/backends/mindspeed/flags_2.3.0.json"):
        assert required in names
    conf_files = {p.relative_to(REPO / "conf").as_posix() for p in (REPO / "conf").rglob("*.yaml")}
    assert {f"navila_tune/conf/{c}" for c in conf_files} <= names
    assets = {p.relative_to(REPO).as_posix() for p in (REPO / "navila_tune" / "assets").rglob("*") if p.is_file()}
    assert assets <= names
    assert not any(n.startswith(("tests/", "benchmarks/", "conf/")) for n in names)


def test_dry_run_from_the_installed_wheel(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = subprocess.run([sys.executable, "-c", "import navila_tune, navila_tune.conf; "
                            "print(navila_tune.__file__); print(list(navila_tune.conf.__path__)[0])"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert all(w.startswith(str(target)) for w in where), where
    proc = subprocess.run([sys.executable, "-m", "navila_tune", "+experiment=cot_8b", "dry_run=true", *PINNED_PATHS,
                           "hydra.run.dir=run"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "posttrain_gpt.py" in proc.stdout and "[5/5] export" in proc.stdout
