"""Run a plan: each selected stage's steps in order, output streamed to the console and the stage log.

A stage writes into ``<output>.partial`` and the folder is renamed to ``<output>`` only after every step
succeeded and the completion marker is written, so an output without its marker never exists under the
final name. A completed output is reused; an inter-process lock on the output keeps concurrent runs
from building the same stage twice.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Sequence

from navila_tune import artifacts
from navila_tune.cluster.nodes import ALL_NODES, NodeInfo
from navila_tune.plan import Command, FileOp, Plan, Stage, Step

TAIL_LINES = 30


ERROR_LINE = re.compile(r"(Error|Exception|error:|Traceback|FAILED|Killed|terminate called|Segmentation fault)")


class StageFailed(RuntimeError):
    def __init__(self, stage: str, log: str, detail: str):
        self.stage, self.log, self.detail = stage, log, detail
        lines = tail(log)
        first = first_error(log)
        head = f"  first error in the log: {first}\n" if first and first not in lines else ""
        super().__init__(f"stage {stage} failed: {detail}\n  log: {log}\n{head}  last lines of the log:\n"
                         + "\n".join(f"    {line}" for line in lines))


class MissingUpstream(RuntimeError):
    pass


@dataclass
class StageResult:
    name: str
    status: str  # ran | reused | failed
    output: str
    log: str
    duration_s: float = 0.0
    detail: str = ""


def tail(path: str, lines: int = TAIL_LINES) -> list[str]:
    try:
        data = Path(path).read_bytes()[-16384:]
    except OSError:
        return []
    text = data.decode(errors="replace").replace("\r", "\n")
    return [line for line in text.splitlines() if line.strip()][-lines:]


def first_error(path: str) -> str | None:
    """The first line that looks like an error (often the root cause, before launcher tracebacks); for a
    Python traceback, the exception line that ends it."""
    try:
        with open(path, "rb") as fh:
            lines = (raw.decode(errors="replace").replace("\r", "").rstrip() for raw in fh)
            for line in lines:
                if not ERROR_LINE.search(line) or line.startswith("$ "):
                    continue
                if line.lstrip().startswith("Traceback (most recent call last)"):
                    indent = len(line) - len(line.lstrip())
                    for follow in lines:  # frames are indented deeper; the exception line is not
                        if follow.strip() and len(follow) - len(follow.lstrip()) <= indent:
                            return follow.strip()
                return line.strip()
    except OSError:
        pass
    return None


def is_complete(stage: Stage) -> bool:
    marker = Path(stage.output) / artifacts.MARKER
    try:
        return json.loads(marker.read_text()).get("fingerprint") == stage.fingerprint
    except (OSError, ValueError):
        return False


@contextmanager
def stage_lock(stage: Stage, console: Callable[[str], None]) -> Iterator[None]:
    """Exclusive flock on ``<output>.lock``; the OS releases it when the holder dies."""
    path = Path(stage.output + ".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = path.read_text().strip() or "another process"
            console(f"[{stage.name}] waiting for {holder} building {stage.output}")
            fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
        fh.flush()
        try:
            yield
        finally:
            fh.seek(0)
            fh.truncate()
            fcntl.flock(fh, fcntl.LOCK_UN)


def signal_path(work_dir: str, run_id: str) -> Path:
    return Path(work_dir) / ".runs" / run_id


def wait_for_leader(work_dir: str, run_id: str, console: Callable[[str], None] = print, poll_s: float = 1.0) -> None:
    """A follower node waits until node 0 has started the run (and removed what it was told to rebuild)."""
    ready, failed = Path(f"{signal_path(work_dir, run_id)}.ready"), Path(f"{signal_path(work_dir, run_id)}.failed")
    said = False
    while not ready.exists():
        if failed.exists():
            raise StageFailed("start", str(failed), f"node 0 failed: {failed.read_text().splitlines()[0]}")
        if not said:
            console(f"waiting for node 0 to start run {run_id}")
            said = True
        time.sleep(poll_s)


class Executor:
    """Runs the selected stages of a plan on this node.

    On a multi-node run every node runs an executor: node 0 builds every stage; the other nodes join
    the stages in ``ALL_NODES`` (one torchrun agent each) and otherwise wait for node 0's completion
    markers. Node 0 signals through ``<work>/.runs/<run_id>.{ready,failed}``.
    """

    def __init__(self, plan: Plan, *, force: Sequence[str] = (), console: Callable[[str], None] = print,
                 stream: BinaryIO | None = None, node: NodeInfo | None = None, run_id: str = "local",
                 poll_s: float = 1.0):
        self.plan = plan
        self.force = set(force)
        self.console = console
        self.stream = stream if stream is not None else sys.stdout.buffer
        self.node = node or NodeInfo(rank=0, count=1, master_addr="127.0.0.1", source="config")
        self.suffix = "" if self.node.is_first else f".node{self.node.rank}"
        self.logs_dir = Path(plan.run_dir) / "logs"
        self.links_dir = Path(plan.run_dir) / "stages"
        self.signals = signal_path(plan.work_dir, run_id)
        self.poll_s = poll_s

    def run(self) -> list[StageResult]:
        if not self.node.is_first:
            return self._run_follower()
        self._clear_signals()
        self._remove_forced()
        self.check_upstream()
        self._signal("ready")
        results = []
        for stage in self.plan.stages:
            if stage.name not in self.plan.selected:
                continue
            result = self.run_stage(stage)
            results.append(result)
            if result.status == "failed":
                self._signal("failed", result.detail)
                return results
        Path(f"{self.signals}.ready").unlink(missing_ok=True)  # followers now wait on markers only
        return results

    # -- multi-node -------------------------------------------------------------------------------

    def _signal(self, what: str, detail: str = "") -> None:
        if self.node.count > 1:
            self.signals.parent.mkdir(parents=True, exist_ok=True)
            Path(f"{self.signals}.{what}").write_text(detail or f"node {self.node.rank} pid {os.getpid()}\n")

    def _clear_signals(self) -> None:
        for what in ("ready", "failed"):
            Path(f"{self.signals}.{what}").unlink(missing_ok=True)

    def _remove_forced(self) -> None:
        """Forced outputs go first, before any other node can mistake them for this run's."""
        for stage in self.plan.stages:
            if stage.name in self.force and stage.name in self.plan.selected:
                with stage_lock(stage, self.console):
                    for path in (Path(stage.output), Path(stage.partial)):
                        if path.exists():
                            _remove(path)

    def _wait(self, what: str, done: Callable[[], bool]) -> None:
        said = False
        while not done():
            failed = Path(f"{self.signals}.failed")
            if failed.exists():
                raise StageFailed(what, str(failed), f"node 0 failed: {failed.read_text().splitlines()[0]}")
            if not said:
                self.console(f"[node {self.node.rank}] waiting for node 0: {what}")
                said = True
            time.sleep(self.poll_s)

    def _run_follower(self) -> list[StageResult]:
        results = []
        try:
            for stage in self.plan.stages:
                if stage.name not in self.plan.selected:
                    continue
                started = time.time()
                log = str(self.logs_dir / f"{stage.name}{self.suffix}.log")
                if stage.name in ALL_NODES and not is_complete(stage):
                    Path(stage.partial).mkdir(parents=True, exist_ok=True)
                    self.logs_dir.mkdir(parents=True, exist_ok=True)
                    with open(log, "ab") as fh:
                        for step in stage.steps:
                            if isinstance(step, Command):
                                self._run_command(stage, step, (fh,))
                            elif step.op in ("write", "mkdir"):
                                run_file_op(step)
                status = "ran" if stage.name in ALL_NODES else "reused"
                self._wait(f"{stage.name} ({stage.output})", lambda s=stage: is_complete(s))
                results.append(StageResult(stage.name, status, stage.output, log, time.time() - started))
        except StageFailed as e:
            results.append(StageResult(e.stage, "failed", "", e.log, 0.0, str(e)))
        return results

    def check_upstream(self) -> None:
        """Every stage a selected stage reads must be selected too, or already built."""
        selected = set(self.plan.selected)
        for stage in self.plan.stages:
            if stage.name not in selected:
                continue
            for name in stage.upstream:
                up = self.plan.stage(name)
                if name not in selected and not is_complete(up):
                    raise MissingUpstream(
                        f"stage {stage.name} reads the output of {name}, which is not built for this config "
                        f"(no complete {up.output}); add {name} to stages, e.g. stages=[{name},{stage.name}]")

    def run_stage(self, stage: Stage) -> StageResult:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        run_log = str(self.logs_dir / f"{stage.name}.log")
        forced = stage.name in self.force
        if not forced and is_complete(stage):
            self._link(stage)
            self.console(f"[{stage.name}] reused {stage.output}")
            return StageResult(stage.name, "reused", stage.output, str(Path(stage.output) / artifacts.STAGE_LOG))
        with stage_lock(stage, self.console):
            if not forced and is_complete(stage):  # built by another process while we waited
                self._link(stage)
                self.console(f"[{stage.name}] reused {stage.output} (built by another run)")
                return StageResult(stage.name, "reused", stage.output, str(Path(stage.output) / artifacts.STAGE_LOG))
            return self._build(stage, run_log, forced)

    def _build(self, stage: Stage, run_log: str, forced: bool) -> StageResult:
        partial = Path(stage.partial)
        if forced and Path(stage.output).exists():
            _remove(Path(stage.output))
        if partial.exists() and (forced or not stage.resumable):
            _remove(partial)
        partial.mkdir(parents=True, exist_ok=True)
        self.console(f"[{stage.name}] running -> {stage.output}")
        started = time.time()
        with open(run_log, "ab") as log_a, open(partial / artifacts.STAGE_LOG, "ab") as log_b:
            for step in stage.steps:
                try:
                    if isinstance(step, Command):
                        self._run_command(stage, step, (log_a, log_b))
                    else:
                        _log(f"$ {step.display()}\n", (log_a, log_b))
                        run_file_op(step)
                except StageFailed as e:
                    return StageResult(stage.name, "failed", stage.output, run_log, time.time() - started,
                                       str(e))
                except OSError as e:
                    detail = f"{step.display()}: {e}"
                    _log(f"error: {detail}\n", (log_a, log_b))
                    return StageResult(stage.name, "failed", stage.output, run_log, time.time() - started,
                                       str(StageFailed(stage.name, run_log, detail)))
        finished = time.time()
        write_marker(stage, partial, started, finished)
        if Path(stage.output).exists():  # an incomplete leftover under the final name
            _remove(Path(stage.output))
        os.rename(partial, stage.output)
        self._link(stage)
        self.console(f"[{stage.name}] done in {finished - started:.1f}s")
        return StageResult(stage.name, "ran", stage.output, run_log, finished - started)

    def _run_command(self, stage: Stage, cmd: Command, logs: tuple[BinaryIO, ...]) -> None:
        env = dict(os.environ)
        if cmd.env_script:
            from navila_tune.cann_env import exported_by

            env.update(exported_by(cmd.env_script))
        env.update(cmd.env)
        _log(f"$ (cd {cmd.cwd} && {cmd.display()})\n", logs)
        proc = subprocess.Popen(
            list(cmd.argv), cwd=cmd.cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE if cmd.stdin is not None else subprocess.DEVNULL,
        )
        if cmd.stdin is not None:
            assert proc.stdin is not None
            try:
                proc.stdin.write(cmd.stdin.encode())
                proc.stdin.close()
            except BrokenPipeError:
                pass
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            self.stream.write(chunk)
            self.stream.flush()
            _log(chunk, logs)
        code = proc.wait()
        if code != 0:
            raise StageFailed(stage.name, logs_name(logs), f"{cmd.argv[0]} exited with status {code}")

    def _link(self, stage: Stage) -> None:
        self.links_dir.mkdir(parents=True, exist_ok=True)
        link = self.links_dir / stage.name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(stage.output, target_is_directory=True)


def logs_name(logs: tuple[BinaryIO, ...]) -> str:
    return str(getattr(logs[0], "name", "?"))


def _log(data: str | bytes, logs: tuple[BinaryIO, ...]) -> None:
    raw = data.encode() if isinstance(data, str) else data
    for fh in logs:
        fh.write(raw)
        fh.flush()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def run_file_op(op: FileOp) -> None:
    dst = Path(op.dst)
    if op.op == "mkdir":
        dst.mkdir(parents=True, exist_ok=True)
    elif op.op == "copy":
        src = Path(op.src or "")
        dst.mkdir(parents=True, exist_ok=True)
        for name in op.names:
            if not (src / name).exists():
                if op.optional:
                    continue
                raise FileNotFoundError(f"{src / name} does not exist")
            shutil.copy2(src / name, dst / name)
    elif op.op == "move":
        if dst.exists():
            _remove(dst)
        shutil.move(str(op.src), str(dst))
    elif op.op == "remove":
        _remove(dst)
    elif op.op == "write":
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(op.content or "")
    else:
        raise ValueError(f"unknown file op {op.op}")


def manifest(folder: Path) -> list[dict[str, Any]]:
    return [
        {"path": str(f.relative_to(folder)), "size": f.stat().st_size}
        for f in sorted(folder.rglob("*")) if f.is_file() and f.name != artifacts.MARKER
    ]


def write_marker(stage: Stage, folder: Path, started: float, finished: float) -> None:
    marker = {
        "stage": stage.name,
        "fingerprint": stage.fingerprint,
        "fingerprint_inputs": stage.fingerprint_inputs,
        "started": started,
        "finished": finished,
        "duration_s": round(finished - started, 3),
        "manifest": manifest(folder),
    }
    tmp = folder / (artifacts.MARKER + ".tmp")
    tmp.write_text(json.dumps(marker, indent=1, sort_keys=True, default=str))
    os.replace(tmp, folder / artifacts.MARKER)


def results_dicts(results: Sequence[StageResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]
