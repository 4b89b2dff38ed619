#!/usr/bin/env python3
"""Native preprocess throughput next to the bare fast tokenizer on the same texts, and its start-up.

Generates (in a temp dir) a 50,000-row Alpaca-style parquet with chain-of-thought-length responses, then
runs, interleaved --repeats times:
- bare tokenizer: the same fast tokenizer batch-encoding the same texts (user content = instruction +
  "\\n" + input, and the response) in batches of 1000 rows, ids materialised as lists, three ways:
  in this process through ``tokenizer(texts)`` and through the backend's ``encode_batch_fast`` (both
  with the tokenizer's own Rust threads), and split over ``workers`` forked processes like the native
  run (``encode_batch_fast``, one thread each, nothing sent back but counts);
- native preprocess with ``workers`` processes (default 2), fresh datasets cache each time (so the
  parquet -> Arrow conversion is included), no progress bar.
The ratio is taken against the fastest bare variant; CPU seconds (this process + its children) are
printed next to wall seconds because the machine may be shared.
Start-up is measured on a 10-row input: cold (a fresh ``python -m navila_tune.data preprocess``), the
import cost of each heavy library in a fresh interpreter, and warm (``preprocess()`` in this process
after the imports: the fixed cost of the run itself).
Targets: preprocess within 1.5x of the bare tokenizer; at most 1 s of fixed start-up.

    python benchmarks/bench_preprocess.py [--rows 50000] [--workers 2] [--repeats 2] [--tokenizer DIR]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TOKENIZER = REPO / "navila_tune" / "assets" / "llama3_tiny"

SEEN = ["a parked car on the right edge of the bike lane", "a pedestrian waiting at the crossing ahead",
        "a red traffic light about twenty meters away", "a delivery van pulling out of a driveway",
        "a narrow gap between the curb and a bus", "wet leaves covering the painted lane markings",
        "a cyclist overtaking on the left", "a roundabout with two exits to the north",
        "construction cones blocking half of the road", "a green light that just turned yellow"]
THOUGHTS = ["Safety comes first, so I should keep a steady distance and watch for sudden movements.",
            "The goal is still ahead and slightly to the left, which matches the route from the map.",
            "If I brake too hard on the wet surface the rear wheel could slip, so I will slow gradually.",
            "Turning now would cut across traffic, so it is better to wait for a clear gap.",
            "The lane continues straight for another block before the junction I need.",
            "I should signal with my arm before changing position so that drivers can anticipate it.",
            "Nothing is blocking the path on my side, and the surface looks dry and even.",
            "Checking over my shoulder, the vehicle behind me is far enough away to move over."]
ACTIONS = ["turn left", "turn right", "go straight 25 cm", "go straight 50 cm", "slow down", "stop",
           "turn left 30 degrees", "turn right 15 degrees"]


def make_rows(n: int, seed: int = 0) -> dict[str, list[str]]:
    rng = random.Random(seed)
    instruction, inputs, outputs = [], [], []
    for i in range(n):
        goal = rng.choice(["the library", "the park gate", "the bakery", "the station", "the bridge"])
        instruction.append(f"You are riding a bicycle through the city. Your goal is to reach {goal}. "
                           f"Describe what you observe, reason step by step about safety and the route, "
                           f"and finish with the next action.")
        inputs.append("" if i % 2 else "Observation: " + "; ".join(rng.sample(SEEN, 3)) + ".")
        steps = [f"I can see {rng.choice(SEEN)}." if k % 3 == 0 else rng.choice(THOUGHTS)
                 for k in range(rng.randint(8, 16))]
        outputs.append(" ".join(steps) + f"\nThe next action is {rng.choice(ACTIONS)}.")
    return {"instruction": instruction, "input": inputs, "output": outputs}


def cpu_seconds() -> float:
    """CPU time of this process plus its waited-for children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _encode_chunk(tok, users: list[str], replies: list[str], fast: bool) -> int:
    tokens = 0
    for texts in (users, replies):
        if fast:
            ids = [e.ids for e in tok.backend_tokenizer.encode_batch_fast(texts, add_special_tokens=False)]
        else:
            ids = tok(texts, add_special_tokens=False)["input_ids"]
        tokens += sum(map(len, ids))
    return tokens


_BARE: tuple = ()


def _bare_worker(a: int) -> int:
    tok, users, replies = _BARE
    return _encode_chunk(tok, users[a:a + 1000], replies[a:a + 1000], True)


def bare_tokenizer(tok, users: list[str], replies: list[str], fast: bool, workers: int = 1):
    """(wall s, cpu s, tokens): in-process when workers == 1, else over forked worker processes."""
    global _BARE
    wall, cpu = time.perf_counter(), cpu_seconds()
    if workers == 1:
        tokens = sum(_encode_chunk(tok, users[a:a + 1000], replies[a:a + 1000], fast)
                     for a in range(0, len(users), 1000))
    else:
        _BARE = (tok, users, replies)
        old = os.environ.get("TOKENIZERS_PARALLELISM")
        os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread per process, as in the native workers
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            tokens = sum(pool.imap(_bare_worker, range(0, len(users), 1000)))
            pool.close()
            pool.join()
        if old is None:
            del os.environ["TOKENIZERS_PARALLELISM"]
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = old
    return time.perf_counter() - wall, cpu_seconds() - cpu, tokens


def run_preprocess(data: Path, tokenizer: Path, out: Path, workers: int, seq_length: int):
    from navila_tune.data import PreprocessParams, preprocess

    out.parent.mkdir(parents=True, exist_ok=True)
    cache = tempfile.mkdtemp(dir=out.parent.parent, prefix="cache-")
    wall, cpu = time.perf_counter(), cpu_seconds()
    report = preprocess(PreprocessParams(input=str(data), tokenizer_dir=str(tokenizer), output_prefix=str(out),
                                         seq_length=seq_length, workers=workers, progress=False, cache_dir=cache))
    return time.perf_counter() - wall, cpu_seconds() - cpu, report


def cold_imports(py: str) -> dict[str, float]:
    code = ("import time, sys\n"
            "t = time.perf_counter(); import datasets; t1 = time.perf_counter()\n"
            "from transformers import PreTrainedTokenizerFast; t2 = time.perf_counter()\n"
            "from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder; t3 = time.perf_counter()\n"
            "print(t1 - t, t2 - t1, t3 - t2)\n")
    out = subprocess.run([py, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    alone = subprocess.run([py, "-c", "import time; t = time.perf_counter(); "
                            "from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder; "
                            "print(time.perf_counter() - t)"], check=True, capture_output=True, text=True)
    return {"datasets": float(out[0]), "transformers PreTrainedTokenizerFast (pulls torch)": float(out[1]),
            "megatron-core indexed_dataset after those": float(out[2]),
            "megatron-core indexed_dataset alone (with torch)": float(alone.stdout)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seq-length", type=int, default=4096)
    ap.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER)
    args = ap.parse_args()
    import pyarrow as pa
    import pyarrow.parquet as pq
    from transformers import AutoTokenizer

    from navila_tune.data import user_content

    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="bench-preprocess-") as tmp:
        tmp_path = Path(tmp)
        # a private copy: both sides must use the same files even if the fixture is regenerated meanwhile
        source_tokenizer = args.tokenizer
        args.tokenizer = Path(shutil.copytree(args.tokenizer, tmp_path / "tokenizer"))
        rows = make_rows(args.rows)
        data = tmp_path / "train.parquet"
        pq.write_table(pa.table(rows), data)
        small = tmp_path / "small.parquet"
        pq.write_table(pa.table({k: v[:10] for k, v in rows.items()}), small)
        users = [user_content(i, q) for i, q in zip(rows["instruction"], rows["input"])]
        replies = rows["output"]
        tok = AutoTokenizer.from_pretrained(str(args.tokenizer), local_files_only=True)
        print(f"{args.rows} rows, {sum(map(len, replies)) / len(replies):.0f} response chars on average, "
              f"tokenizer {source_tokenizer}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")

        first, _, _ = run_preprocess(small, args.tokenizer, tmp_path / "first" / "ds", args.workers,
                                     args.seq_length)
        print(f"first preprocess() in this process (10 rows; imports megatron-core): {first:.2f} s")
        names = ["bare tokenizer() in-process", "bare encode_batch_fast in-process",
                 f"bare encode_batch_fast, {args.workers} processes", f"native preprocess, {args.workers} workers"]
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
        report = None
        for r in range(args.repeats):
            for name in names:
                if name.startswith("native"):
                    wall, cpu, report = run_preprocess(data, args.tokenizer, tmp_path / f"run{r}" / "ds",
                                                       args.workers, args.seq_length)
                else:
                    wall, cpu, tokens = bare_tokenizer(tok, users, replies, fast="fast" in name,
                                                       workers=args.workers if "processes" in name else 1)
                runs[name].append((wall, cpu))
            print(f"  repeat {r}: " + "; ".join(f"{n} {runs[n][-1][0]:.2f} s (cpu {runs[n][-1][1]:.2f})"
                                               for n in names))
            print(f"    native phases: load {report.timing['load_s']:.2f} s, encode+write "
                  f"{report.timing['encode_s']:.2f} s, finish {report.timing['write_s']:.2f} s")
        best = {n: min(w for w, _ in runs[n]) for n in names}
        best_cpu = {n: min(c for _, c in runs[n]) for n in names}
        native_name = names[-1]
        bare_name = min(names[:-1], key=best.get)
        print(f"bare tokenizer on the same texts: {tokens:,} tokens; fastest: {bare_name}, {best[bare_name]:.2f} s "
              f"({tokens / best[bare_name]:,.0f} tokens/s)")
        print(f"native preprocess: best {best[native_name]:.2f} s = {args.rows / best[native_name]:,.0f} rows/s, "
              f"{report.tokens['tokenized'] / best[native_name]:,.0f} tokens/s "
              f"({report.tokens['tokenized']:,} tokens with the template), {report.rows_written} samples written")
        ratio = best[native_name] / best[bare_name]
        cpu_ratio = best_cpu[native_name] / best_cpu[names[2]]
        print(f"RATIO wall preprocess / fastest bare tokenizer = {ratio:.2f} (target <= 1.5): "
              f"{'ok' if ratio <= 1.5 else 'MISSED'}; CPU preprocess / bare over {args.workers} processes = "
              f"{cpu_ratio:.2f}")

        # -- start-up on 10 rows ----------------------------------------------------------------------
        warm = []
        for r in range(3):
            t, _, _ = run_preprocess(small, args.tokenizer, tmp_path / f"small{r}" / "ds", args.workers,
                                     args.seq_length)
            warm.append(t)
        cold = []
        for r in range(2):
            argv = [py, "-m", "navila_tune.data", "preprocess", "--input", str(small), "--tokenizer",
                    str(args.tokenizer), "--output-prefix", str(tmp_path / f"cold{r}" / "ds"), "--seq-length",
                    str(args.seq_length), "--workers", str(args.workers), "--no-progress",
                    "--cache-dir", str(tmp_path / f"cold-cache{r}")]
            start = time.perf_counter()
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            cold.append(time.perf_counter() - start)
        start = time.perf_counter()
        subprocess.run([py, "-c", "pass"], check=True)
        interpreter = time.perf_counter() - start
        imports = cold_imports(py)
        print(f"start-up, 10 rows: warm preprocess() (libraries already imported) best {min(warm):.2f} s "
              f"(target <= 1 s): {'ok' if min(warm) <= 1.0 else 'MISSED'}")
        print(f"start-up, 10 rows: cold `python -m navila_tune.data preprocess` best {min(cold):.2f} s, "
              f"of which interpreter {interpreter:.2f} s and library imports:")
        for name, secs in imports.items():
            print(f"    {name}: {secs:.2f} s")


if __name__ == "__main__":
    main()
