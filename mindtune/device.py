"""Device profiles: what `device:` / `hardware:` / `train.precision` mean for MindSpore and MindFormers.

The same code runs on CPU and Ascend; only this profile differs. CPU turns off the Ascend-only kernels
(flash attention, fused RMSNorm, bf16) and uses the rope-slice path; Ascend turns them back on.
"""
import contextlib
import glob
import os
from dataclasses import dataclass

from mindtune.errors import ConfigError


@dataclass(frozen=True)
class DeviceProfile:
    name: str               # cpu | 910a | 910b
    device_target: str      # MindSpore device target
    compute_dtype: str      # float32 | float16 | bfloat16
    use_flash_attention: bool
    fused_rms_norm: bool
    use_rope_slice: bool

    @property
    def is_cpu(self) -> bool:
        return self.device_target == "CPU"

    @property
    def needs_loss_scale(self) -> bool:
        return self.compute_dtype == "float16"


_PRECISION = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


# An Ascend server shows its NPUs as /dev/davinci0, 1, ... (next to /dev/davinci_manager); CANN's set_env.sh
# exports ASCEND_OPP_PATH (MindSpore's Ascend backend reads its operator packages from there).
ASCEND_DEVICE_GLOB = "/dev/davinci[0-9]*"
_host_check = {"on": True}


@contextlib.contextmanager
def without_host_check():
    """Resolve profiles for planning (validate, plan): an Ascend config may be checked on a CPU machine."""
    was = _host_check["on"]
    _host_check["on"] = False
    try:
        yield
    finally:
        _host_check["on"] = was


def ascend_host_problem() -> str:
    """What this host lacks to run on Ascend ("" when nothing is missing)."""
    if not glob.glob(ASCEND_DEVICE_GLOB):
        return ("this host has no Ascend NPU (no /dev/davinci* device): run on an Ascend server with its driver "
                "installed and `source ascend_env/set_env.sh` there, or use the CPU")
    if not os.environ.get("ASCEND_OPP_PATH"):
        return ("CANN is not set up in this shell (ASCEND_OPP_PATH is unset): run `source ascend_env/set_env.sh` "
                "first")
    return ""


def resolve_profile(device: str = "cpu", hardware: str = "auto", precision: str = "auto",
                    key: str = "device") -> DeviceProfile:
    """Combine the config's device, hardware and precision keys into one profile, refusing impossible pairs and
    (outside `without_host_check`) an Ascend device this host cannot run. `key` names the option in errors."""
    if device == "cpu":
        if hardware not in ("auto", "cpu"):
            raise ConfigError(f"hardware: {hardware!r} needs device: ascend (device is cpu)")
        if precision == "bf16":
            raise ConfigError("train.precision: bf16 has no CPU kernels in MindSpore 2.9; use fp32 or fp16")
        dtype = _PRECISION.get(precision, "float32")
        return DeviceProfile("cpu", "CPU", dtype, use_flash_attention=False, fused_rms_norm=False,
                             use_rope_slice=True)
    problem = ascend_host_problem() if _host_check["on"] else ""
    if problem:
        raise ConfigError(f"{key}: ascend, but {problem}")
    hardware = "910b" if hardware in ("auto", "cpu") else hardware
    if hardware == "910a" and precision == "bf16":
        raise ConfigError("train.precision: the Ascend 910A has no bf16 units; use fp16")
    default = "float16" if hardware == "910a" else "bfloat16"
    dtype = _PRECISION.get(precision, default)
    return DeviceProfile(hardware, "Ascend", dtype, use_flash_attention=True, fused_rms_norm=True,
                         use_rope_slice=False)


_context_done = {}


def setup_context(profile: DeviceProfile, graph_mode: bool = True, seed: int = 0):
    """Set the MindSpore context once per process (it cannot change device afterwards)."""
    import mindspore as ms

    from mindtune import shims

    key = (profile.device_target, graph_mode)
    if _context_done.get("key") not in (None, key):
        # Switching graph/pynative is allowed; switching device target is not.
        if _context_done["key"][0] != profile.device_target:
            raise ConfigError("the device cannot change inside one process")
    os.environ.setdefault("GLOG_v", "3")
    ms.set_context(mode=ms.GRAPH_MODE if graph_mode else ms.PYNATIVE_MODE, device_target=profile.device_target)
    if not profile.is_cpu:  # the planner's memory limit is the runtime's
        from mindtune.parallel.hardware import get_hardware
        ms.set_context(max_device_memory=f"{get_hardware(profile.name).usable_gb:g}GB")
    ms.set_seed(seed)
    shims.apply(profile)
    if profile.is_cpu:     # the losses' log-softmax on the fused CPU kernel (none without a compiler)
        from mindtune import cpu_kernels
        from mindtune.engine.losses import LABEL_LOG_PROBS
        LABEL_LOG_PROBS.use_fused(cpu_kernels.label_log_softmax())
    _context_done["key"] = key
