"""A model under evaluation: anything `mindtune generate` accepts, with lazily built generation and
log-likelihood networks that share its weights."""
from typing import List, Optional

from mindtune.errors import ConfigError


def prompt_text(messages: List[dict], tokenizer, raw: bool = False) -> str:
    """The prompt as the model sees it: the chat template with a generation prompt, or (raw, or a tokenizer
    without a template) the turns' texts joined by blank lines."""
    if raw or not tokenizer.chat_template:
        return "\n\n".join(m["content"] for m in messages)
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True)


class EvalModel:
    """load(path) -> EvalModel. `generate(prompts)` continues token-id prompts; `loglik(pairs)` scores
    (context, continuation) token-id pairs."""

    def __init__(self, name, spec, weights, tokenizer, profile, batch_size: int = 8, extras: Optional[dict] = None):
        self.name, self.spec, self.weights, self.tokenizer = name, spec, weights, tokenizer
        self.profile, self.batch_size, self.extras = profile, batch_size, extras or {}
        self._generator = self._loglik = None

    @classmethod
    def load(cls, path: str, profile, batch_size: int = 8, seed: int = 0, key: str = "--model") -> "EvalModel":
        from mindtune.generation.load import resolve_generation_model

        resolved, spec, weights, extras = resolve_generation_model(path, seed)
        if resolved.tokenizer is None:
            raise ConfigError(f"{key}: {resolved.source} has no tokenizer")
        return cls(path, spec, weights, resolved.tokenizer, profile, batch_size, extras)

    @property
    def eos_ids(self) -> List[int]:
        eos = {self.spec.eos_token_id}
        if self.tokenizer.eos_id is not None:
            eos.add(self.tokenizer.eos_id)
        return sorted(eos)

    def update_weights(self, weights: dict):
        """New weights of the same architecture (training): the compiled generator is kept."""
        self.weights = weights
        if self._generator is not None:
            self._generator.update_weights(weights)
        self._loglik = None

    def release(self):
        """Drop the compiled networks (before evaluating another model in the same process)."""
        self._generator = self._loglik = None

    def generate(self, prompts: List[List[int]], max_new_tokens: int, sampling, seed: int = 0) -> List[str]:
        """Texts of the continuations (without their end-of-sequence token), in input order."""
        from mindtune.generation import Generator

        if not prompts:
            return []
        if self._generator is None:
            self._generator = Generator(self.spec, self.weights, self.profile,
                                        batch_size=min(self.batch_size, len(prompts)))
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))   # less padding per batch
        out = self._generator.generate([prompts[i] for i in order], max_new_tokens, sampling, seed=seed,
                                       eos_ids=self.eos_ids, soft_prompt=self.extras.get("soft_prompt"),
                                       prefix_kv=self.extras.get("prefix_kv"))
        eos = set(self.eos_ids)
        texts = [None] * len(prompts)
        for rank, i in enumerate(order):
            tokens = out.tokens[rank, :out.lengths[rank]].tolist()
            if tokens and tokens[-1] in eos:
                tokens = tokens[:-1]
            texts[i] = self.tokenizer.decode(tokens).strip()
        return texts

    def loglik(self, pairs) -> List[tuple]:
        from mindtune.eval.likelihood import LogLikelihood

        if self.extras:
            raise ConfigError(f"--model: {self.name} is a prompt/prefix adapter; log-likelihood metrics "
                              "(multiple choice, perplexity) support full models and LoRA/BitFit adapters only")
        if self._loglik is None:
            self._loglik = LogLikelihood(self.spec, self.weights, self.profile, self.batch_size, where=self.name)
        return self._loglik.score(pairs)

