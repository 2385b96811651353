"""The network every stage trains: MindFormers' Llama returning logits and final hidden states, no built-in loss.

MindFormers' `LlamaForCausalLM.construct` slices the input and computes its own masked cross-entropy in
training mode; the stages need logits (SFT, PPO, DPO) or hidden states (reward and value heads), so this cell
calls its backbone and output projection directly. Parameter names stay those of MindFormers.
"""
from mindspore import nn


class CausalLM(nn.Cell):
    """logits, hidden = CausalLM(llama)(input_ids [, input_embeds, prefix_keys_values])

    input_ids: int32 [batch, seq_length] (seq_length as built; pad with the spec's pad id, which attention masks).
    input_embeds: optional float [batch, seq_length, hidden] replacing the embedding lookup (soft prompts).
    prefix_keys_values: optional per-layer key/value prefixes (prefix tuning, P-tuning v2).
    """

    def __init__(self, llama):
        super().__init__(auto_prefix=False)  # keep MindFormers' parameter names
        self.llama = llama
        self.backbone = llama.model
        self.lm_head = llama.lm_head

    def embed(self, input_ids):
        return self.backbone.tok_embeddings(input_ids)

    def construct(self, input_ids, input_embeds=None, prefix_keys_values=None):
        hidden = self.backbone(input_ids, input_embeds=input_embeds, prefix_keys_values=prefix_keys_values)
        logits = self.lm_head(hidden)
        return logits.astype("float32"), hidden
