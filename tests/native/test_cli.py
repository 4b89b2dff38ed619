"""The three command lines: one flag per params field, parsed into the same dataclasses."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import native_testkit as kit
from navila_tune.native.cli import build_parser, parse_params
from navila_tune.native.evaluate import EvaluateParams
from navila_tune.native.generate import GenerateParams
from navila_tune.native.train import TrainParams


@pytest.mark.parametrize("module", ["train", "generate", "evaluate"])
def test_help_runs(module):
    proc = subprocess.run([sys.executable, "-m", f"navila_tune.native.{module}", "--help"], capture_output=True,
                          text=True, env=kit.env_for_subprocess(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--load-dir" in proc.stdout


def test_flags_parse_into_params():
    p = parse_params(TrainParams, ["--load-dir", "a", "--data-prefix", "b", "--save-dir", "c", "--train-iters", "3",
                                   "--global-batch-size", "8", "--micro-batch-size", "2", "--finetune", "lora",
                                   "--lora-targets", "linear_qkv", "linear_fc1", "--num-layer-list", "1", "3",
                                   "--no-progress", "--expected-arch", json.dumps(kit.tiny_arch(1024).to_dict())],
                     "t", "d")
    assert p.train_iters == 3 and p.lora_targets == ["linear_qkv", "linear_fc1"] and p.num_layer_list == [1, 3]
    assert p.progress is False and p.expected_arch == kit.tiny_arch(1024) and p.lr == TrainParams.lr
    g = parse_params(GenerateParams, ["--load-dir", "a", "--tokenizer-dir", "t", "--prompts", "hi", "there",
                                      "--output-jsonl", "o", "--temperature", "0.7"], "g", "d")
    assert g.prompts == ["hi", "there"] and g.temperature == 0.7 and g.top_k == 0
    e = parse_params(EvaluateParams, ["--load-dir", "a", "--tokenizer-dir", "t", "--eval-input", "x.parquet",
                                      "--output-json", "r.json", "--map-keys", '{"prompt": "q", "response": "a"}',
                                      "--max-samples", "5"], "e", "d")
    assert e.map_keys == {"prompt": "q", "response": "a"} and e.max_samples == 5
    with pytest.raises(SystemExit):
        build_parser(TrainParams, "t", "d").parse_args(["--load-dir", "a"])  # required flags missing
