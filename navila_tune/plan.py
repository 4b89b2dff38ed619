"""The plan: a pure function of the resolved config that returns the ordered stages of the job.

A stage is data: its steps (argv commands and small file operations), the config values that determine
its output (``params``, keyed by config path), its input files, its upstream stages, where it writes
and a fingerprint of all of that. Backends turn params into steps; the executor runs them.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, Union

from navila_tune import __version__


@dataclass(frozen=True)
class Command:
    """One subprocess: argv list, environment additions, working directory, optional stdin text."""

    argv: tuple[str, ...]
    cwd: str
    env: Mapping[str, str] = field(default_factory=dict)
    env_script: str | None = None  # variables this script exports are added at run time
    stdin: str | None = None

    def display(self) -> str:
        return shlex.join(self.argv)


@dataclass(frozen=True)
class FileOp:
    """A file operation the executor performs itself (no shell): mkdir, copy, move, remove, write."""

    op: str  # mkdir | copy | move | remove | write
    dst: str
    src: str | None = None
    names: tuple[str, ...] = ()  # copy: file names under src (missing ones are skipped when optional)
    optional: bool = False
    content: str | None = None  # write

    def display(self) -> str:
        if self.op == "mkdir":
            return shlex.join(["mkdir", "-p", self.dst])
        if self.op == "copy":
            srcs = [str(Path(self.src or "") / n) for n in self.names] if self.names else [self.src or ""]
            return shlex.join(["cp", *srcs, self.dst]) + ("   # those that exist" if self.optional else "")
        if self.op == "move":
            return shlex.join(["mv", self.src or "", self.dst])
        if self.op == "remove":
            return shlex.join(["rm", "-rf", self.dst])
        if self.op == "write":
            return f"write {shlex.quote(self.dst)} ({len(self.content or '')} bytes)"
        raise ValueError(f"unknown file op {self.op}")


Step = Union[Command, FileOp]


@dataclass(frozen=True)
class Stage:
    name: str
    backend: str
    steps: tuple[Step, ...]
    params: Mapping[str, Any]  # config path -> value; exactly what determines the output
    inputs: tuple[str, ...]  # files and folders outside the work dir that the stage reads
    upstream: tuple[str, ...]  # names of the stages whose outputs it reads
    output: str  # final output folder: <work_dir>/<name>/<fingerprint>
    fingerprint: str
    fingerprint_inputs: Mapping[str, Any]  # what the fingerprint hashes (for reasons and records)
    resumable: bool = False  # a partial output is continued, not discarded (training)

    @property
    def partial(self) -> str:
        """Where the stage writes; renamed to ``output`` once it succeeded."""
        return self.output + ".partial"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["steps"] = [
            {"kind": type(s).__name__, "display": s.display(), **asdict(s)} for s in self.steps
        ]
        d["partial"] = self.partial
        return d


@dataclass(frozen=True)
class Plan:
    stages: tuple[Stage, ...]
    work_dir: str
    run_dir: str
    selected: tuple[str, ...] = ()  # the stages this run executes (others may be reused from the cache)

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"version": __version__, "work_dir": self.work_dir, "run_dir": self.run_dir,
                "selected": list(self.selected), "stages": [s.to_dict() for s in self.stages]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Plan":
        """The plan as ``plan.json`` recorded it (what a stage job on a cluster node executes)."""
        stages = []
        for d in data["stages"]:
            steps: list[Step] = []
            for step in d["steps"]:
                fields_ = {k: v for k, v in step.items() if k not in ("kind", "display")}
                if step["kind"] == "Command":
                    fields_["argv"] = tuple(fields_["argv"])
                    steps.append(Command(**fields_))
                else:
                    fields_["names"] = tuple(fields_["names"])
                    steps.append(FileOp(**fields_))
            stages.append(Stage(
                name=d["name"], backend=d["backend"], steps=tuple(steps), params=d["params"],
                inputs=tuple(d["inputs"]), upstream=tuple(d["upstream"]), output=d["output"],
                fingerprint=d["fingerprint"], fingerprint_inputs=d["fingerprint_inputs"],
                resumable=d["resumable"]))
        return cls(stages=tuple(stages), work_dir=data["work_dir"], run_dir=data["run_dir"],
                   selected=tuple(data["selected"]))


FileIdentity = Callable[[str], Any]


def file_identity(path: str) -> Any:
    """Path plus size and mtime of a file, or of every file under a folder; "missing" when absent."""
    p = Path(path)
    if p.is_file():
        st = p.stat()
        return [st.st_size, st.st_mtime_ns]
    if p.is_dir():
        entries = {}
        for f in sorted(p.rglob("*")):
            if f.is_file() and not f.name.startswith("."):
                st = f.stat()
                entries[str(f.relative_to(p))] = [st.st_size, st.st_mtime_ns]
        return entries
    return "missing"


def fingerprint(payload: Mapping[str, Any]) -> str:
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class StageSpec:
    """A backend-independent description of one stage, before rendering."""

    name: str
    params: Mapping[str, Any]
    inputs: Sequence[str]
    upstream: Sequence[str]
    runtime: Mapping[str, Any] = field(default_factory=dict)  # affects how, not what (workers, ports)
    resumable: bool = False


class StagePaths:
    """Output folders of the stages of one plan, looked up by name while rendering."""

    def __init__(self) -> None:
        self._outputs: dict[str, str] = {}

    def add(self, name: str, output: str) -> None:
        self._outputs[name] = output

    def output(self, name: str) -> str:
        return self._outputs[name]


Renderer = Callable[[StageSpec, str, StagePaths], Sequence[Step]]


def assemble(
    specs: Sequence[StageSpec],
    *,
    backend: str,
    backend_params: Mapping[str, Any],
    render: Renderer,
    work_dir: str,
    run_dir: str,
    identify: FileIdentity = file_identity,
) -> Plan:
    """Fingerprint the specs in order (upstream first), place their outputs and render their steps."""
    paths = StagePaths()
    fingerprints: dict[str, str] = {}
    stages = []
    for spec in specs:
        payload = {
            "stage": spec.name,
            "backend": backend,
            "backend_params": dict(backend_params),
            "params": dict(spec.params),
            "upstream": {u: fingerprints[u] for u in spec.upstream},
            "inputs": {i: identify(i) for i in spec.inputs},
            "version": __version__,
        }
        fp = fingerprint(payload)
        fingerprints[spec.name] = fp
        output = str(Path(work_dir) / spec.name / fp)
        paths.add(spec.name, output)
        steps = tuple(render(spec, output + ".partial", paths))
        stages.append(Stage(
            name=spec.name, backend=backend, steps=steps, params=dict(spec.params),
            inputs=tuple(spec.inputs), upstream=tuple(spec.upstream), output=output, fingerprint=fp,
            fingerprint_inputs=payload, resumable=spec.resumable,
        ))
    return Plan(stages=tuple(stages), work_dir=work_dir, run_dir=run_dir)
