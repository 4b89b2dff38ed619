"""Where each stage puts its results inside its output folder (the same for every backend)."""

MEGATRON_BASE = "mg"  # convert: Megatron checkpoint root (holds latest_checkpointed_iteration.txt)
DATA = "data"  # preprocess: folder of indexed datasets
TRAIN_PREFIX = "data/train"  # preprocess: training prefix (PREFIX_packed_*_document.{bin,idx})
EVAL_PREFIX = "data/eval"  # preprocess: held-out prefix, when data.eval_input is set
CHECKPOINTS = "ckpt"  # train: Megatron checkpoint root with iter_* folders
TENSORBOARD = "tensorboard"  # train: event files
GENERATIONS = "generations.jsonl"  # generate
METRICS = "metrics.json"  # evaluate
HF_EXPORT = "hf"  # export: HF model folder for NaVILA
VILA_EXPORT = "vila"  # export (export.vila): the NaVILA/VILA checkpoint holding the fine-tuned llm/
STAGE_LOG = "stage.log"  # every stage: its console output
MARKER = "COMPLETE.json"  # every stage: written last; an output without it is not complete

# Files copied byte for byte from the source model next to exported weights (never re-saved).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "chat_template.jinja",
)
GENERATION_CONFIG = "generation_config.json"
