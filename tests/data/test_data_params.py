"""PreprocessParams mirrors the config's data group; building it from a composed config."""

from __future__ import annotations

import dataclasses

from omegaconf import MISSING, OmegaConf

from navila_tune.config.schema import DataConfig, MapKeys
from navila_tune.data import PreprocessParams
from navila_tune.data.params import default_map_keys

NOT_PREPROCESS = {"name", "eval_input", "pad_to_multiple_of"}  # other stages' keys / pretrain-only


def test_every_data_key_is_a_param_with_the_same_default():
    params = {f.name: f for f in dataclasses.fields(PreprocessParams)}
    for f in dataclasses.fields(DataConfig):
        if f.name in NOT_PREPROCESS:
            continue
        assert f.name in params, f"data.{f.name} has no PreprocessParams field"
        if f.name == "map_keys":
            assert dataclasses.asdict(MapKeys()) == default_map_keys()
        elif f.default is not MISSING and f.default is not dataclasses.MISSING:
            assert params[f.name].default == f.default, f.name


def test_from_config_takes_the_data_group_and_the_model_facts():
    data = OmegaConf.structured(DataConfig(name="x", input="/d/train.parquet", seq_length=256, workers=2,
                                           map_keys=MapKeys(prompt="question", query=None)))
    p = PreprocessParams.from_config(data, tokenizer_dir="/m/tok", prompt_type="llama3", output_prefix="/w/ds",
                                     progress=False)
    assert (p.input, p.seq_length, p.workers, p.tokenizer_dir, p.output_prefix, p.progress) == (
        "/d/train.parquet", 256, 2, "/m/tok", "/w/ds", False)
    assert p.map_keys == {"prompt": "question", "query": None, "response": "output", "system": None,
                          "history": None}
