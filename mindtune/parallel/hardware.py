"""Hardware profiles for planning: one place for the numbers of a 910A, a 910B and a CPU host.

Sources and caveats (see docs/parallel.md): HBM sizes and usable memory follow the `max_device_memory` values
MindFormers ships in its configs ("30GB # 59GB for Atlas 800T A2": 30 GB on the 32 GB 910A, 59 GB on the 64 GB
910B). Huawei publishes 256 TFLOPS
FP16 for the Ascend 910 (910A); it publishes no official figure for the 910B, so its ~320 TFLOPS is the figure
trade press reports and is marked approximate. Link bandwidths are nominal unidirectional figures per NPU.
"""
from dataclasses import dataclass

from mindtune.errors import ConfigError

GB = 1024 ** 3


@dataclass(frozen=True)
class Hardware:
    """One accelerator type as the planner sees it.

    name: cpu | 910a | 910b.
    memory_gb: physical device memory (HBM).
    usable_gb: what MindSpore may allocate (`max_device_memory` in MindFormers configs); plans must fit in it.
    reserve_gb: kept back inside usable memory for HCCL buffers, kernel workspaces and fragmentation.
    npus_per_node: devices in one server; tensor parallel groups stay inside it.
    peak_tflops: dense fp16/bf16 matmul peak per device.
    efficiency: fraction of the peak the planner assumes the step's FLOPs reach. 0.70 is the hardware-FLOPs
        utilisation of MindFormers' published Llama-2-7B full fine-tune on 910B (4820 tokens/s/NPU); the other
        published runs are checks of the model, not inputs to it (docs/parallel.md).
    link_gbps: GB/s of one HCCS link; mesh_size NPUs are fully meshed, so a collective over n <= mesh_size
        devices drives n-1 links at once. Beyond the mesh (910A: across its two 4-NPU groups; or across
        servers) collectives run at inter_node_gbps, the RoCE bandwidth per NPU.
    compute_dtype: the training dtype mindtune's device profile picks on this hardware.
    flash_attention: mindtune turns flash attention on (Ascend) or off (CPU).
    """
    name: str
    memory_gb: float
    usable_gb: float
    reserve_gb: float
    npus_per_node: int
    peak_tflops: float
    efficiency: float
    link_gbps: float
    mesh_size: int
    inter_node_gbps: float
    compute_dtype: str
    flash_attention: bool

    def collective_gbps(self, n: int) -> float:
        """Bandwidth per device of a collective over n devices placed on consecutive ranks."""
        if n <= self.mesh_size:
            return self.link_gbps * max(n - 1, 1)
        return self.inter_node_gbps

    @property
    def usable_bytes(self) -> float:
        return self.usable_gb * GB

    @property
    def reserve_bytes(self) -> float:
        return self.reserve_gb * GB


HARDWARE = {
    # Atlas 800 training server (model 9000): 8 x Ascend 910 (910A), 32 GB HBM, fp16 only (no bf16 units).
    # HCCS links the NPUs inside a server (30 GB/s class links); 100GE RoCE per NPU between servers.
    "910a": Hardware("910a", memory_gb=32, usable_gb=30, reserve_gb=1.0, npus_per_node=8, peak_tflops=256,
                     efficiency=0.70, link_gbps=30, mesh_size=4, inter_node_gbps=12.5, compute_dtype="float16",
                     flash_attention=True),
    # Atlas 800T A2: 8 x Ascend 910B, 64 GB HBM, bf16 and fp16; HCCS full mesh (~56 GB/s per link, 7 links),
    # 200GE RoCE per NPU between servers. The peak is approximate (no official figure).
    "910b": Hardware("910b", memory_gb=64, usable_gb=59, reserve_gb=1.0, npus_per_node=8, peak_tflops=320,
                     efficiency=0.70, link_gbps=56, mesh_size=8, inter_node_gbps=25, compute_dtype="bfloat16",
                     flash_attention=True),
    # The CPU backend: used for tests; memory is host RAM and is not checked, throughput is not meaningful.
    "cpu": Hardware("cpu", memory_gb=0, usable_gb=0, reserve_gb=0, npus_per_node=1, peak_tflops=1,
                    efficiency=0.5, link_gbps=10, mesh_size=1, inter_node_gbps=10, compute_dtype="float32",
                    flash_attention=False),
}

DTYPE_BYTES = {"float32": 4, "fp32": 4, "float16": 2, "fp16": 2, "bfloat16": 2, "bf16": 2}


def get_hardware(name: str) -> Hardware:
    try:
        return HARDWARE[name]
    except KeyError:
        raise ConfigError(f"unknown hardware {name!r}; known: {', '.join(sorted(HARDWARE))}") from None


def dtype_bytes(dtype: str) -> int:
    try:
        return DTYPE_BYTES[dtype]
    except KeyError:
        raise ConfigError(f"unknown dtype {dtype!r}; known: fp32, fp16, bf16") from None
