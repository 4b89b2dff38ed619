"""Per-node checks before any stage: the devices, the toolkit and the code this node would run.

Each node of a multi-node run checks itself, so a broken node fails fast with its name instead of
hanging a rendezvous for minutes.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from navila_tune.validate import ConfigError, Problem


# Where the Ascend driver exposes the NPUs; NAVILA_NPU_DEVICE_DIR points elsewhere (stand-in tests).
DEVICE_DIR_ENV = "NAVILA_NPU_DEVICE_DIR"


def visible_npus(env: dict[str, str] | None = None) -> int:
    """Ascend devices this process may use: DIR/davinciN (DIR=/dev), narrowed by ASCEND_RT_VISIBLE_DEVICES."""
    env = dict(os.environ) if env is None else env
    folder = env.get(DEVICE_DIR_ENV, "/dev")
    numbers = [p.name[len("davinci"):] for p in Path(folder).glob("davinci*") if p.name[len("davinci"):].isdigit()]
    visible = env.get("ASCEND_RT_VISIBLE_DEVICES")
    if visible:
        wanted = {v.strip() for v in visible.split(",") if v.strip()}
        numbers = [n for n in numbers if n in wanted]
    return len(numbers)


def megatron_origin(python: str, home: str) -> str:
    """Where ``import megatron`` resolves for the backend's python when run from the MindSpeed home."""
    code = "import importlib.util as u; s = u.find_spec('megatron'); print(s.origin if s and s.origin else " \
           "(list(s.submodule_search_locations)[0] if s else ''))"
    try:
        out = subprocess.run([python, "-c", code], cwd=home, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"<{python} did not run: {e}>"
    return out.stdout.strip()


def check_node(cfg: Any) -> None:
    node = os.uname().nodename
    problems: list[Problem] = []
    hw = cfg.hardware
    if cfg.backend.name == "mindspeed":
        found = visible_npus()
        if found < hw.devices_per_node:
            problems.append(Problem("hardware.devices_per_node", hw.devices_per_node,
                                    f"node {node} sees {found} NPU(s) (/dev/davinci*, ASCEND_RT_VISIBLE_DEVICES)",
                                    "free the NPUs (leftover processes?), fix ASCEND_RT_VISIBLE_DEVICES, or use a "
                                    "hardware group with fewer devices"))
        home = Path(cfg.backend.mindspeed.home)
        if home.is_dir():
            origin = megatron_origin(cfg.backend.mindspeed.python, str(home))
            if not origin.startswith(str(home.resolve())):
                problems.append(Problem("backend.mindspeed.home", str(home),
                                        f"on node {node} `import megatron` from there resolves to "
                                        f"{origin or 'nothing'}, not to {home}/megatron",
                                        "copy Megatron-LM core_v0.12.1's megatron/ into the MindSpeed-LLM home, "
                                        "as its install guide says"))
    if problems:
        raise ConfigError(problems, what=f"node {node}")
