"""Published MindFormers Llama-2 fine-tuning runs on Atlas 800T A2 (8 x 910B per server), the planner's check.

Settings are read from the MindFormers r1.2.0 configs (runner_config.batch_size is the per-device micro-batch;
parallel_config; recompute_config; param_init_type; the pet_config of LoRA) and the throughput from the r1.2.0
model card's table for those configs (Atlas 800T A2, seq 4096, alpaca). Only numbers are recorded here.
"""
from dataclasses import dataclass
from typing import Tuple

from mindtune.parallel.memory import Strategy

SOURCE = "https://github.com/mindspore-lab/mindformers/blob/r1.2.0/"
MODEL_CARD = SOURCE + "docs/model_cards/llama2.md"


@dataclass(frozen=True)
class PublishedRun:
    name: str
    preset: str
    peft: str
    lora_rank: int
    lora_targets: Tuple[str, ...]
    param_dtype: str
    strategy: Strategy
    seq_length: int
    tokens_per_second: float      # per NPU, as published
    config: str                   # path in the MindFormers repository

    @property
    def url(self) -> str:
        return SOURCE + self.config


PUBLISHED = [
    PublishedRun("Llama-2-7B full", "llama2-7b", "none", 0, (), "float32",
                 Strategy(dp=8, mp=1, pp=1, micro_batch_size=1, recompute="none", optimizer_shard=True),
                 4096, 4820, "configs/llama2/finetune_llama2_7b.yaml"),
    PublishedRun("Llama-2-7B LoRA", "llama2-7b", "lora", 16, ("wq", "wk", "wv", "wo"), "float32",
                 Strategy(dp=8, mp=1, pp=1, micro_batch_size=2, recompute="none", optimizer_shard=True),
                 4096, 5217, "configs/llama2/lora_llama2_7b.yaml"),
    PublishedRun("Llama-2-13B full", "llama2-13b", "none", 0, (), "float16",
                 Strategy(dp=8, mp=1, pp=1, micro_batch_size=4, recompute="full", optimizer_shard=True),
                 4096, 1883, "configs/llama2/finetune_llama2_13b.yaml"),
    PublishedRun("Llama-2-13B LoRA", "llama2-13b", "lora", 8, ("wq", "wv"), "float16",
                 Strategy(dp=8, mp=1, pp=1, micro_batch_size=4, recompute="full", optimizer_shard=True),
                 4096, 2322, "configs/llama2/lora_llama2_13b.yaml"),
    PublishedRun("Llama-2-70B full (64 NPUs)", "llama2-70b", "none", 0, (), "float16",
                 Strategy(dp=2, mp=4, pp=8, micro_batch_size=1, micro_batches=128, recompute="none",
                          optimizer_shard=True, seq_parallel=True, vocab_emb_dp=False),
                 4096, 414, "configs/llama2/finetune_llama2_70b.yaml"),
]
