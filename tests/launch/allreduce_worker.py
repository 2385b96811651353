"""A trivial msrun worker: data-parallel context, one gradient average across workers; `fail` or `kill` as
argv[1] makes rank 1 exit with code 3 or SIGKILL itself after the collective."""
import os
import signal
import sys

import numpy as np

import mindspore as ms
from mindspore import nn

from mindtune.config.schema import ParallelConfig
from mindtune.parallel.context import apply_parallel_context, init_distributed

ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
world, rank = init_distributed()
apply_parallel_context(ParallelConfig(data_parallel=world), world)
reducer = nn.DistributedGradReducer([ms.Parameter(ms.Tensor(np.zeros(3, np.float32)), name="w")], mean=True)


@ms.jit
def average(grads):
    return reducer(grads)


mean = average((ms.Tensor(np.full(3, rank + 1.0, np.float32)),))[0].asnumpy()
print(f"RESULT rank={rank} world={world} mean={mean.tolist()}", flush=True)
mode = sys.argv[1] if len(sys.argv) > 1 else ""
if mode == "fail" and rank == 1:
    sys.exit(3)
if mode == "kill" and rank == 1:
    os.kill(os.getpid(), signal.SIGKILL)
