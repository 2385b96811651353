"""Which pipeline stage holds which layers: MindFormers' `offset` for splits that do not divide evenly.

MindFormers' LayerSetting gives every stage `num_layers // pipeline_stage` layers plus `offset[stage]`, and
refuses an offset whose sum is not `num_layers % pipeline_stage` (so an uneven split without an offset, such as
40 layers over 16 stages, fails when the model is built). The extra layers go to the middle stages first: the
first stage also holds the embedding and the last the output head and the loss.
"""
from typing import List, Union


def pipeline_offset(num_layers: int, pp: int) -> Union[int, List[int]]:
    """MindFormers' `offset` for `num_layers` over `pp` stages: 0 when they divide evenly, else one int per stage."""
    extra = num_layers % pp if pp > 1 else 0
    if not extra:
        return 0
    order = list(range(1, pp - 1)) + [pp - 1, 0]           # middle stages, then the last, then the first
    chosen = set(order[:extra])
    return [1 if stage in chosen else 0 for stage in range(pp)]


def layers_per_stage(num_layers: int, pp: int) -> List[int]:
    offset = pipeline_offset(num_layers, pp)
    base = num_layers // pp
    return [base + (offset[i] if offset else 0) for i in range(pp)]
