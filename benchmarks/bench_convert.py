#!/usr/bin/env python3
"""Checkpoint conversion throughput and peak memory, next to a plain copy of the same bytes.

Writes (in a temp dir, deleted afterwards) a random bf16 Llama of about 1 B parameters as HF
safetensors shards (Llama-3 vocab 128256, hidden 2048, ffn 8192, 32 heads / 8 query groups, 8
layers by default), then runs, each in a fresh child process that reports its own wall time and peak
RSS (``VmHWM`` of /proc/self/status at exit, so generating the model here does not count):
- copy: a plain read-and-write copy (16 MiB buffer) of the HF shard files;
- hf2mg: HF -> Megatron at TP2/PP2;
- mg2hf: that Megatron checkpoint -> HF (checked bitwise against the source, tensor by tensor);
interleaved in rotating order, --repeats times, each after a sync and a pause, keeping each one's
best time (the machine and its disk are shared, and a run right after another big write is slowed);
- idle: a child that only imports the converter (the interpreter + torch floor of every RSS number).
Throughput is GB/s of tensor bytes written. Targets: peak RSS under 3x the largest output rank file;
conversion throughput at least half of the (faster) copy.

    python benchmarks/bench_convert.py [--layers 8] [--hidden 2048] [--ffn 8192] [--vocab 128256]
                                       [--tp 2] [--pp 2] [--repeats 4] [--work-dir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GB = 1e9
COPY_BUFFER = 16 << 20


# ------------------------------------------------------------------------------------------ children


def child(argv: list[str]) -> None:
    """Run one measured operation in this (fresh) process and print a JSON line about it."""
    op, *paths = argv
    if op == "idle":
        import navila_tune.convert.api  # noqa: F401  (what every conversion child imports)
        seconds, written = 0.0, 0
    elif op == "copy":
        src, dst = Path(paths[0]), Path(paths[1])
        dst.mkdir()
        buf = bytearray(COPY_BUFFER)
        view = memoryview(buf)
        written, t0 = 0, time.perf_counter()
        for f in sorted(src.glob("*.safetensors")):
            with open(f, "rb") as fin, open(dst / f.name, "wb") as fout:
                while n := fin.readinto(buf):
                    fout.write(view[:n])
                    written += n
        seconds = time.perf_counter() - t0
    else:
        from navila_tune.convert import hf_to_megatron, megatron_to_hf

        t0 = time.perf_counter()
        if op == "hf2mg":
            tp, pp = int(paths[2]), int(paths[3])
            hf_to_megatron(paths[0], paths[1], tp=tp, pp=pp, progress=False)
            files = list(Path(paths[1]).rglob("model_optim_rng.pt"))
        else:
            megatron_to_hf(paths[0], paths[1], source_hf_dir=paths[2], progress=False)
            files = list(Path(paths[1]).glob("*.safetensors"))
        seconds = time.perf_counter() - t0
        written = sum(f.stat().st_size for f in files)
    print(json.dumps({"op": op, "seconds": seconds, "bytes": written, "peak_rss": peak_rss()}))


def peak_rss() -> int:
    """This process's peak RSS in bytes: VmHWM, which starts afresh at exec.

    (``getrusage(RUSAGE_SELF).ru_maxrss`` would not do: Linux carries the forking parent's peak over
    into it across exec, so every child would report at least this benchmark's own footprint.)
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_child(*args: str) -> dict:
    os.sync()  # start every measurement without a backlog of dirty pages from the previous one
    time.sleep(2)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, env=env)
    if out.returncode:
        raise SystemExit(f"child {args[0]} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------ the model


def write_random_llama(out: Path, *, layers: int, hidden: int, ffn: int, heads: int, groups: int, vocab: int,
                       shard_bytes: int = 1 << 30) -> tuple[int, int]:
    """A random bf16 Llama as HF shards (+ index, config), written shard by shard; (params, largest tensor)."""
    import torch
    from safetensors.torch import save_file

    d = hidden // heads
    shapes = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes |= {p + "self_attn.q_proj.weight": (heads * d, hidden), p + "self_attn.k_proj.weight": (groups * d, hidden),
                   p + "self_attn.v_proj.weight": (groups * d, hidden), p + "self_attn.o_proj.weight": (hidden, heads * d),
                   p + "mlp.gate_proj.weight": (ffn, hidden), p + "mlp.up_proj.weight": (ffn, hidden),
                   p + "mlp.down_proj.weight": (hidden, ffn), p + "input_layernorm.weight": (hidden,),
                   p + "post_attention_layernorm.weight": (hidden,)}
    shapes |= {"model.norm.weight": (hidden,), "lm_head.weight": (vocab, hidden)}
    out.mkdir(parents=True)
    gen = torch.Generator().manual_seed(0)
    shards, current, size = [], {}, 0
    for name, shape in shapes.items():
        nbytes = 2 * _numel(shape)
        if current and size + nbytes > shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[name] = shape
        size += nbytes
    shards.append(current)
    weight_map = {}
    for k, shard in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors = {n: (torch.empty(s, dtype=torch.bfloat16).normal_(0, 0.02, generator=gen)) for n, s in shard.items()}
        save_file(tensors, str(out / fname), metadata={"format": "pt"})
        weight_map |= {n: fname for n in shard}
        del tensors
    total = sum(2 * _numel(s) for s in shapes.values())
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                  "weight_map": weight_map}))
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
              "intermediate_size": ffn, "num_hidden_layers": layers, "num_attention_heads": heads,
              "num_key_value_heads": groups, "vocab_size": vocab, "max_position_embeddings": 8192,
              "rope_theta": 500000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "hidden_act": "silu",
              "torch_dtype": "bfloat16", "bos_token_id": 128000, "eos_token_id": 128001}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "generation_config.json").write_text(json.dumps({"bos_token_id": 128000, "eos_token_id": [128001, 128009]}))
    params = sum(_numel(s) for s in shapes.values())
    return params, max(2 * _numel(s) for s in shapes.values())


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def assert_bitwise_equal(a: Path, b: Path) -> int:
    """Compare two HF dirs tensor by tensor (streaming); the number of tensors compared."""
    import torch
    from safetensors import safe_open

    def where(d: Path) -> dict[str, Path]:
        out = {}
        for f in d.glob("*.safetensors"):
            with safe_open(str(f), "pt") as h:
                out |= {k: f for k in h.keys()}
        return out

    wa, wb = where(a), where(b)
    if sorted(wa) != sorted(wb):
        raise SystemExit(f"tensor names differ: {sorted(set(wa) ^ set(wb))[:5]}")
    for name in wa:
        with safe_open(str(wa[name]), "pt") as fa, safe_open(str(wb[name]), "pt") as fb:
            x, y = fa.get_tensor(name), fb.get_tensor(name)
            if x.dtype != y.dtype or not torch.equal(x.view(torch.int16), y.view(torch.int16)):
                raise SystemExit(f"{name} differs after the round trip")
    return len(wa)


# ------------------------------------------------------------------------------------------ main


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--ffn", type=int, default=8192)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--groups", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=128256)
    ap.add_argument("--tp", type=int, default=2)
    ap.add_argument("--pp", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=4, help="interleaved runs of each measurement (best is kept)")
    ap.add_argument("--work-dir", default=None, help="parent of the temp dir (default: the system temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_convert_", dir=args.work_dir))
    try:
        t0 = time.perf_counter()
        params, largest_tensor = write_random_llama(work / "hf", layers=args.layers, hidden=args.hidden, ffn=args.ffn,
                                                    heads=args.heads, groups=args.groups, vocab=args.vocab)
        print(f"model: {params / 1e9:.2f} B parameters, bf16, {params * 2 / GB:.2f} GB in "
              f"{len(list((work / 'hf').glob('*.safetensors')))} shards (written in {time.perf_counter() - t0:.0f} s); "
              f"largest tensor {largest_tensor / 2**20:.0f} MiB")
        idle = run_child("idle")
        runs: dict[str, list[dict]] = {"copy": [], "hf2mg": [], "mg2hf": []}
        runs["hf2mg"].append(run_child("hf2mg", str(work / "hf"), str(work / "mg0"), str(args.tp), str(args.pp)))
        latest = work / "mg0"
        for r in range(args.repeats):
            # rotate the order: a run that follows another big write is slowed by it (shared disk)
            for op in (["copy", "hf2mg", "mg2hf"] * 2)[r % 3:r % 3 + 3]:
                if op == "copy":
                    runs[op].append(run_child("copy", str(work / "hf"), str(work / "copy")))
                    shutil.rmtree(work / "copy")
                elif op == "hf2mg" and r < args.repeats - 1:
                    new = work / f"mg{r + 1}"
                    runs[op].append(run_child("hf2mg", str(work / "hf"), str(new), str(args.tp), str(args.pp)))
                    shutil.rmtree(latest)
                    latest = new
                elif op == "mg2hf":
                    shutil.rmtree(work / "hf_back", ignore_errors=True)
                    runs[op].append(run_child("mg2hf", str(latest), str(work / "hf_back"), str(work / "hf")))
        n = assert_bitwise_equal(work / "hf", work / "hf_back")
        shutil.move(latest, work / "mg")
        # best time of each (the least disturbed run), highest peak RSS of each
        best = {op: dict(min(rs, key=lambda x: x["seconds"]), peak_rss=max(x["peak_rss"] for x in rs))
                for op, rs in runs.items()}
        copy, hf2mg, mg2hf = best["copy"], best["hf2mg"], best["mg2hf"]

        largest_rank = max(f.stat().st_size for f in (work / "mg").rglob("model_optim_rng.pt"))
        largest_hf = max(f.stat().st_size for f in (work / "hf_back").glob("*.safetensors"))
        copy_rate = copy["bytes"] / copy["seconds"] / GB
        print(f"round trip HF -> TP{args.tp}/PP{args.pp} -> HF: bitwise identical ({n} tensors)")
        print(f"largest output file: rank file {largest_rank / 2**20:.0f} MiB, HF shard {largest_hf / 2**20:.0f} MiB; "
              f"idle child (python + torch + converter imports) {idle['peak_rss'] / 2**20:.0f} MiB")
        every = ", ".join(op + " " + "/".join(f"{x['seconds']:.1f}" for x in rs) for op, rs in runs.items())
        print(f"best of {args.repeats} interleaved runs each (seconds of every run: {every})")
        print(f"{'run':<8}{'GB written':>11}{'seconds':>9}{'GB/s':>7}{'x copy':>8}{'peak RSS MiB':>14}"
              f"{'x rank file':>12}{'x tensor':>10}")
        for name, r in (("copy", copy), ("hf2mg", hf2mg), ("mg2hf", mg2hf)):
            rate = r["bytes"] / r["seconds"] / GB
            print(f"{name:<8}{r['bytes'] / GB:>11.2f}{r['seconds']:>9.2f}{rate:>7.2f}{rate / copy_rate:>8.2f}"
                  f"{r['peak_rss'] / 2**20:>14.0f}{r['peak_rss'] / largest_rank:>12.2f}"
                  f"{r['peak_rss'] / largest_tensor:>10.2f}")
        ok = True
        for name, r in (("hf2mg", hf2mg), ("mg2hf", mg2hf)):
            ratio = r["bytes"] / r["seconds"] / GB / copy_rate
            rss = r["peak_rss"] / largest_rank
            verdict = "ok" if ratio >= 0.5 and rss < 3 else "MISSED"
            ok &= verdict == "ok"
            print(f"target {name}: throughput {ratio:.2f}x copy (>= 0.5), peak RSS {rss:.2f}x the largest rank "
                  f"file (< 3): {verdict}")
        if not ok:
            sys.exit(1)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
