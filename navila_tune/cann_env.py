"""Capture the variables a toolkit environment script (CANN ``set_env.sh``) exports.

The script is sourced in a child bash, which prints its environment NUL-separated; the launcher adds
what changed to each stage's environment. No command is ever wrapped in a shell string.
"""

from __future__ import annotations

import os
import subprocess
from functools import lru_cache
from pathlib import Path

_PRINT_ENV = 'set -a; source "$1" >/dev/null 2>&1 || exit 97; env -0'


class EnvScriptError(RuntimeError):
    pass


@lru_cache(maxsize=None)
def exported_by(script: str) -> dict[str, str]:
    """Variables whose value differs after sourcing ``script`` (new or changed ones)."""
    if not Path(script).is_file():
        raise EnvScriptError(f"toolkit environment script {script} does not exist "
                             "(backend.mindspeed.env_script); install CANN or point the key at its set_env.sh")
    proc = subprocess.run(["bash", "-c", _PRINT_ENV, "navila-env", script], capture_output=True, check=False)
    if proc.returncode != 0:
        raise EnvScriptError(f"sourcing {script} failed (exit {proc.returncode}): "
                             f"{proc.stderr.decode(errors='replace')[-500:]}")
    after = {}
    for item in proc.stdout.split(b"\0"):
        if b"=" in item:
            key, _, value = item.partition(b"=")
            after[key.decode()] = value.decode(errors="replace")
    base = os.environ
    skip = {"_", "SHLVL", "PWD", "OLDPWD"}
    return {k: v for k, v in after.items() if k not in skip and base.get(k) != v}
