"""Dataclass schemas for every config group, registered in Hydra's ConfigStore.

YAML files under ``conf/`` hold values; these classes hold types. A wrong type or an unknown key fails
at compose time and names the key. ``MISSING`` (``???`` in YAML) marks values a group must set.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

STAGES = ("convert", "preprocess", "train", "generate", "evaluate", "export")


@dataclass
class ArchConfig:
    num_layers: int = MISSING
    hidden_size: int = MISSING
    ffn_hidden_size: int = MISSING
    num_attention_heads: int = MISSING
    num_query_groups: int = MISSING
    vocab_size: int = MISSING
    max_position_embeddings: int = MISSING
    rope_theta: float = MISSING
    norm_epsilon: float = MISSING
    tie_word_embeddings: bool = False


@dataclass
class ModelConfig:
    name: str = MISSING
    family: str = MISSING  # explicit dispatch key; never sniffed from names
    hf_dir: str = MISSING  # HF model directory (config.json, safetensors, tokenizer)
    tokenizer_dir: str = MISSING
    prompt_type: str = MISSING
    arch: ArchConfig = field(default_factory=ArchConfig)
    make_vocab_size_divisible_by: int = 1
    # When set and hf_dir holds no weights, the native backend initialises them from this seed.
    init_seed: Optional[int] = None
    # Where the checkpoint dtype comes from: the HF weights are converted to this dtype.
    params_dtype: str = "bf16"
    # hf: hf_dir is a plain HF Llama directory. vila: vila_dir is a NaVILA/VILA checkpoint (config.json,
    # llm/, vision_tower/, mm_projector/) whose llm/ is fine-tuned; hf_dir must then be ${.vila_dir}/llm.
    source_format: str = "hf"
    vila_dir: Optional[str] = None


@dataclass
class RecomputeConfig:
    granularity: Optional[str] = None  # full | selective
    method: Optional[str] = None  # uniform | block (full only)
    num_layers: Optional[int] = None


@dataclass
class ParallelismConfig:
    name: str = MISSING
    tp: int = 1
    pp: int = 1
    cp: int = 1
    sequence_parallel: bool = False
    num_layer_list: Optional[List[int]] = None
    distributed_optimizer: bool = False
    reuse_fp32_param: bool = False  # MindSpeed --reuse-fp32-param
    recompute: RecomputeConfig = field(default_factory=RecomputeConfig)


@dataclass
class MapKeys:
    prompt: str = "instruction"
    query: Optional[str] = "input"
    response: str = "output"
    system: Optional[str] = None
    history: Optional[str] = None


@dataclass
class DataConfig:
    name: str = MISSING
    input: str = MISSING  # file or folder; never a hub name
    eval_input: Optional[str] = None  # held-out split (file or folder)
    handler: str = "AlpacaStyleInstructionHandler"
    map_keys: MapKeys = field(default_factory=MapKeys)
    seq_length: int = MISSING
    pack: bool = False
    neat_pack: bool = False
    append_eod: bool = False
    enable_thinking: Optional[bool] = None
    workers: int = 1
    overlong: str = "mindspeed"  # mindspeed | truncate | fail
    max_bad_row_fraction: float = 0.01
    pad_to_multiple_of: int = 8
    answer_marker: str = "The next action is"


@dataclass
class LoraConfig:
    r: int = 16
    alpha: int = 32
    targets: List[str] = field(
        default_factory=lambda: ["linear_qkv", "linear_proj", "linear_fc1", "linear_fc2"]
    )


@dataclass
class OptimConfig:
    name: str = MISSING
    finetune: str = "full"  # full | lora
    lora: LoraConfig = field(default_factory=LoraConfig)
    lr: float = MISSING
    min_lr: float = 0.0
    lr_decay_style: str = "cosine"
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    clip_grad: float = 1.0
    train_iters: int = MISSING
    global_batch_size: int = MISSING
    micro_batch_size: int = MISSING
    grad_accum: Optional[int] = None  # derived as GBS / (MBS * DP) unless given
    log_interval: int = 20
    eval_interval: int = 500
    eval_iters: int = 10
    save_interval: int = 1000
    seed: int = 1234
    precision: str = "bf16"  # bf16 | fp16 | fp32
    o2_optimizer: bool = False  # MindSpeed --o2-optimizer: bf16 optimizer states
    o2_gradient: bool = False  # MindSpeed --o2-gradient: bf16 gradients


@dataclass
class HardwareConfig:
    name: str = MISSING
    accelerator: str = MISSING  # npu | cuda | cpu
    chip: str = MISSING
    memory_gb: float = MISSING
    devices_per_node: int = 1
    nnodes: int = 1
    node_rank: Optional[int] = None  # taken from the scheduler when it says so
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    rdzv_backend: Optional[str] = None  # c10d for elastic rendezvous; None for static master addr
    rdzv_id: Optional[str] = None  # shared by the nodes of one launch (default: the Slurm job id)
    memory_margin: float = 0.05
    reserve_gb: float = 3.0  # memory the planner sets aside per device for runtime, comm buffers, allocator
    env: Dict[str, str] = field(default_factory=dict)


@dataclass
class MindSpeedConfig:
    home: str = MISSING  # MindSpeed-LLM checkout (run from here)
    python: str = "python"
    env_script: str = "/usr/local/Ascend/ascend-toolkit/set_env.sh"


@dataclass
class NativeConfig:
    device: str = "cpu"  # cpu | cuda
    threads: Optional[int] = None


@dataclass
class BackendConfig:
    name: str = MISSING  # mindspeed | native
    mindspeed: MindSpeedConfig = field(default_factory=MindSpeedConfig)
    native: NativeConfig = field(default_factory=NativeConfig)


@dataclass
class ClusterConfig:
    """How the run reaches its machines. local: here (or inside a scheduler job); sbatch: one Slurm job
    per stage, chained with afterok. Partition, account and time also feed hydra/launcher=slurm."""

    name: str = "local"
    mode: str = "local"  # local | sbatch
    partition: Optional[str] = None
    account: Optional[str] = None
    time: str = "24:00:00"
    qos: Optional[str] = None
    extra_sbatch: List[str] = field(default_factory=list)  # more "#SBATCH" options, e.g. "--exclusive"
    submit: bool = True  # false: write the sbatch scripts only


@dataclass
class PathsConfig:
    models: str = MISSING
    data: str = MISSING
    mindspeed_home: str = MISSING
    work_dir: str = MISSING  # shared, content-addressed stage outputs


@dataclass
class GenerateConfig:
    prompts: List[str] = field(default_factory=list)
    num_eval_prompts: int = 3  # prompts taken from the held-out split when ``prompts`` is empty
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = off


@dataclass
class EvaluateConfig:
    max_samples: Optional[int] = None
    max_new_tokens: int = 128
    baseline: bool = True  # also score the checkpoint before fine-tuning
    batch_size: int = 32


@dataclass
class ExportConfig:
    vila: bool = False  # also write a VILA checkpoint: model.vila_dir's vision_tower/, mm_projector/ + the new llm/
    handoff_check: bool = True  # run the NaVILA hand-off check on the export (a failure fails the stage)
    check_samples: int = 4  # training samples of the loss-equivalence check
    check_max_tokens: int = 512  # tokens kept per sample
    check_dtypes: List[str] = field(default_factory=lambda: ["fp32", "bf16", "fp16"])
    navila_python: Optional[str] = None  # python of a NaVILA-pinned env (scripts/make_navila_env.sh): load it there too


@dataclass
class NavilaTuneConfig:
    model: ModelConfig = MISSING
    parallelism: ParallelismConfig = MISSING
    data: DataConfig = MISSING
    optim: OptimConfig = MISSING
    hardware: HardwareConfig = MISSING
    backend: BackendConfig = MISSING
    paths: PathsConfig = MISSING
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    stages: List[str] = field(default_factory=lambda: list(STAGES))
    dry_run: bool = False
    force: List[str] = field(default_factory=list)
    plan: bool = False
    allow_oom_risk: bool = False
    experiment_name: str = "default"


GROUPS = {
    "model": ModelConfig,
    "parallelism": ParallelismConfig,
    "data": DataConfig,
    "optim": OptimConfig,
    "hardware": HardwareConfig,
    "backend": BackendConfig,
    "paths": PathsConfig,
    "cluster": ClusterConfig,
}


def register_configs() -> None:
    """Register the root schema and one base schema per group (at the root, so they are not options)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="navila_tune_schema", node=NavilaTuneConfig)
    for group, schema in GROUPS.items():
        cs.store(name=f"{group}_schema", node=schema)


def to_container(cfg: Any) -> Dict[str, Any]:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # type: ignore[return-value]
