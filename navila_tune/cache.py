"""Why a stage will run or be reused: compare its fingerprint inputs with the closest completed build."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping

from navila_tune import artifacts
from navila_tune.plan import Plan, Stage


def completed_builds(stage: Stage) -> Iterable[dict[str, Any]]:
    """Completion markers of every finished build of this stage kind in the work dir."""
    folder = Path(stage.output).parent
    if not folder.is_dir():
        return
    for marker in folder.glob(f"*/{artifacts.MARKER}"):
        try:
            yield json.loads(marker.read_text())
        except (OSError, ValueError):
            continue


def differences(current: Mapping[str, Any], previous: Mapping[str, Any]) -> list[str]:
    """Human-readable reasons, e.g. ``config changed: data.seq_length``."""
    reasons: list[str] = []
    changed = _changed_keys(current.get("params", {}), previous.get("params", {}))
    if changed:
        reasons.append("config changed: " + ", ".join(changed))
    inputs = sorted(k for k in set(current.get("inputs", {})) | set(previous.get("inputs", {}))
                    if current.get("inputs", {}).get(k) != previous.get("inputs", {}).get(k))
    if inputs:
        reasons.append("input changed: " + ", ".join(inputs))
    upstream = sorted(k for k in current.get("upstream", {})
                      if current["upstream"][k] != previous.get("upstream", {}).get(k))
    if upstream:
        reasons.append("upstream changed: " + ", ".join(upstream))
    if current.get("backend") != previous.get("backend") or current.get("backend_params") != previous.get(
            "backend_params"):
        reasons.append("backend changed")
    if current.get("version") != previous.get("version"):
        reasons.append(f"navila_tune version changed ({previous.get('version')} -> {current.get('version')})")
    return reasons


def _changed_keys(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            keys += _changed_keys(va, vb, f"{prefix}{key}.")
        elif va != vb:
            keys.append(f"{prefix}{key}")
    return keys


def reason(stage: Stage, complete: bool, forced: bool) -> str:
    if forced:
        return "forced"
    if complete:
        return "cached"
    if Path(stage.partial).is_dir() and stage.resumable:
        return "resumes an interrupted build"
    best: list[str] | None = None
    for marker in completed_builds(stage):
        diff = differences(stage.fingerprint_inputs, marker.get("fingerprint_inputs", {}))
        if best is None or len(diff) < len(best):
            best = diff
    if best is None:
        return "not built yet"
    return "; ".join(best) if best else "not built yet"


def statuses(plan: Plan, force: Iterable[str]) -> dict[str, str]:
    from navila_tune.executor import is_complete

    forced = set(force)
    out = {}
    for stage in plan.stages:
        complete = is_complete(stage)
        verb = "reuse" if complete and stage.name not in forced else "run"
        out[stage.name] = f"{verb}: {reason(stage, complete, stage.name in forced)}"
    return out
