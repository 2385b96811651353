"""Generation with a KV cache on CPU and Ascend (see generator.py), and host-side sampling."""
from mindtune.generation.generator import GenerationOutput, Generator
from mindtune.generation.sampling import SamplingConfig

__all__ = ["Generator", "GenerationOutput", "SamplingConfig"]
