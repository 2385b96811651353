"""Model specifications: the architecture numbers of a Llama-family model, and named presets.

A spec says nothing about the device or precision; `mindtune.models.build` combines it with a device profile.
"""
from dataclasses import asdict, dataclass, fields

from mindtune.errors import ConfigError


@dataclass(frozen=True)
class ModelSpec:
    """Architecture of a Llama-family decoder (Llama 2/3, SmolLM2, Qwen2.5 through the legacy MindFormers class).

    Attributes:
        vocab_size: rows of the embedding table.
        hidden_size: model width.
        num_layers: decoder blocks.
        num_heads: attention heads.
        num_kv_heads: key/value heads (grouped-query attention); equal to num_heads for plain multi-head.
        intermediate_size: SwiGLU width.
        rms_norm_eps: RMSNorm epsilon.
        rope_theta: rotary base frequency.
        max_position: longest sequence the rotary table is built for.
        tie_word_embeddings: the output projection shares the embedding matrix.
        qkv_bias: q/k/v projections carry biases (Qwen2.5).
        bos_token_id, eos_token_id, pad_token_id: special ids; pad must never occur inside real text,
            because MindFormers masks attention to every key equal to it.
    """
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_position: int = 4096
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    bos_token_id: int = 1
    eos_token_id: int = 2
    pad_token_id: int = 0

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def num_parameters(self) -> int:
        """Parameter count, embeddings included (the tied output counted once)."""
        h, kv = self.hidden_size, self.num_kv_heads * self.head_dim
        attn = h * h * 2 + h * kv * 2 + (h + 2 * kv if self.qkv_bias else 0)
        ffn = 3 * h * self.intermediate_size
        per_layer = attn + ffn + 2 * h
        embed = self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
        return self.num_layers * per_layer + embed + h

    def check(self):
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"model: hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(f"model: num_heads {self.num_heads} is not divisible by num_kv_heads {self.num_kv_heads}")
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if not 0 <= getattr(self, name) < self.vocab_size:
                raise ConfigError(f"model: {name}={getattr(self, name)} is outside the vocabulary (size {self.vocab_size})")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "model spec") -> "ModelSpec":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
        try:
            return cls(**data).check()
        except TypeError as exc:
            raise ConfigError(f"{where}: {exc}") from None


PRESETS = {
    # A tiny random model for unit tests and the demo; its vocabulary is the shipped demo tokenizer's.
    "tiny": ModelSpec(vocab_size=512, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                      intermediate_size=128, max_position=512, tie_word_embeddings=True,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0),
    "smollm2-135m": ModelSpec(vocab_size=49152, hidden_size=576, num_layers=30, num_heads=9, num_kv_heads=3,
                              intermediate_size=1536, rms_norm_eps=1e-5, rope_theta=100000.0, max_position=8192,
                              tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=0),
    "llama2-7b": ModelSpec(vocab_size=32000, hidden_size=4096, num_layers=32, num_heads=32, num_kv_heads=32,
                           intermediate_size=11008, rms_norm_eps=1e-5, max_position=4096),
    "llama2-13b": ModelSpec(vocab_size=32000, hidden_size=5120, num_layers=40, num_heads=40, num_kv_heads=40,
                            intermediate_size=13824, rms_norm_eps=1e-5, max_position=4096),
    "llama2-70b": ModelSpec(vocab_size=32000, hidden_size=8192, num_layers=80, num_heads=64, num_kv_heads=8,
                            intermediate_size=28672, rms_norm_eps=1e-5, max_position=4096),
    # Qwen2.5-7B expressed through the legacy Llama class: q/k/v biases, GQA, untied output.
    "qwen2.5-7b": ModelSpec(vocab_size=152064, hidden_size=3584, num_layers=28, num_heads=28, num_kv_heads=4,
                            intermediate_size=18944, rms_norm_eps=1e-6, rope_theta=1000000.0, max_position=32768,
                            qkv_bias=True, bos_token_id=151643, eos_token_id=151645, pad_token_id=151643),
}


def get_preset(name: str) -> ModelSpec:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown model preset {name!r}; known: {', '.join(sorted(PRESETS))}") from None
