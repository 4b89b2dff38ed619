"""Native preprocessing: Alpaca-style (CoT) data -> MindSpeed-LLM-compatible indexed dataset + data report.

Heavy libraries (datasets, transformers, megatron-core) are imported only when a function needs them.
"""

from .errors import DataError
from .params import PreprocessParams
from .report import DataReport
from .template import IGNORE_INDEX, Conversation, encode_prompt, encode_sample, user_content
from .writer import output_files, report_path


def preprocess(params: PreprocessParams) -> DataReport:
    """Write PREFIX_packed_{input_ids,attention_mask,labels}_document.{bin,idx} and the data report."""
    from .pipeline import preprocess as _preprocess

    return _preprocess(params)


__all__ = ["DataError", "PreprocessParams", "DataReport", "preprocess", "encode_prompt", "encode_sample",
           "user_content", "Conversation", "IGNORE_INDEX", "output_files", "report_path"]
