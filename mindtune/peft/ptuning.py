"""peft.method: ptuning — P-tuning v1 (Liu et al. 2021, "GPT Understands, Too"): `num_virtual_tokens` virtual
token embeddings at the input layer, produced by a trainable prompt encoder from trainable seed embeddings.

`peft.encoder: lstm` (the paper's): a 2-layer bidirectional LSTM over the seed embeddings, then
linear(2h, 2h) -> relu -> linear(2h, hidden). `peft.encoder: mlp`: linear(hidden, h) -> relu -> linear(h, h) ->
relu -> linear(h, hidden). h = `peft.encoder_hidden_size` (0: the model's hidden size). The virtual tokens go
in front of the input (the paper also interleaves them with template text; a prefix is the common form).
The encoder's output does not depend on the input, so after training it is folded: the adapter directory
holds the virtual token embeddings (`peft.prompt_embeddings`, the same format as prompt tuning), and training
from a saved adapter continues on those embeddings.
"""
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from mindtune.peft import Adapted
from mindtune.peft.prompt import PromptEmbedding, saved_prompt
from mindtune.peft.virtual import PROMPT_EMBEDDINGS, SoftPromptLM, fill_id, fold_prompt

NAME = "peft.prompt_encoder."


class PromptEncoder(nn.Cell):
    """() -> virtual token embeddings [P, hidden]."""

    def __init__(self, kind: str, num_virtual: int, hidden: int, width: int, seed: int):
        super().__init__()
        rng = np.random.default_rng([seed, 13])
        self.kind = kind
        self.embedding = Parameter(Tensor(rng.standard_normal((num_virtual, hidden)).astype(np.float32)),
                                   name="embedding")
        if kind == "lstm":
            self.lstm = nn.LSTM(hidden, width, num_layers=2, bidirectional=True, batch_first=True)
            self.head = nn.SequentialCell(nn.Dense(2 * width, 2 * width), nn.ReLU(), nn.Dense(2 * width, hidden))
        else:
            self.head = nn.SequentialCell(nn.Dense(hidden, width), nn.ReLU(), nn.Dense(width, width), nn.ReLU(),
                                          nn.Dense(width, hidden))
        self.update_parameters_name(NAME)

    def construct(self):
        x = self.embedding
        if self.kind == "lstm":
            x, _ = self.lstm(x.expand_dims(0))   # one sequence of P seed embeddings
            x = ops.squeeze(x, 0)
        return self.head(x)


def extra_positions(cfg) -> int:
    return cfg.num_virtual_tokens


def apply(lm, cfg, spec, *, seed=0, saved=None, where="adapter", **_) -> Adapted:
    if saved is not None:  # a folded adapter: continue on its virtual token embeddings
        encoder = PromptEmbedding(saved_prompt(saved, cfg, where))
        trainable, export = [encoder.embeddings], None
    else:
        encoder = PromptEncoder(cfg.encoder, cfg.num_virtual_tokens, spec.hidden_size,
                                cfg.encoder_hidden_size or spec.hidden_size, seed)
        trainable = list(encoder.get_parameters())
        export = lambda: {PROMPT_EMBEDDINGS: fold_prompt(encoder)}  # noqa: E731
    network = SoftPromptLM(lm, encoder, cfg.num_virtual_tokens, fill_id(spec))
    return Adapted(network=network, trainable=trainable, adapter_names=[p.name for p in trainable],
                   extra_positions=cfg.num_virtual_tokens, export=export,
                   info={"encoder": cfg.encoder, "folded": saved is not None})
