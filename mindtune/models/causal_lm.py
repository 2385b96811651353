"""The network every stage trains: MindFormers' Llama returning logits and final hidden states, no built-in loss.

MindFormers' `LlamaForCausalLM.construct` slices the input and computes its own masked cross-entropy in
training mode; the stages need logits (SFT, PPO, DPO) or hidden states (reward and value heads), so this cell
calls its backbone and output projection directly. Parameter names stay those of MindFormers.

Packed sequences (`mindtune.data.packing`: several rows in one sequence) take a second path through the same
layers: MindFormers' `LlamaModel` builds its mask from the pad id alone and, given an explicit mask, neither
turns it into the additive form its non-flash attention adds nor restarts the rotary positions, so this cell
runs the backbone's own embedding, layers and final norm itself with a block-diagonal causal mask and per-row
positions.
"""
from mindspore import nn, ops

MASKED = -10000.0   # the additive mask value of MindFormers' causal mask (LowerTriangularMaskWithDynamic)


class CausalLM(nn.Cell):
    """logits, hidden = CausalLM(llama)(input_ids [, input_embeds, prefix_keys_values, positions, segments])

    input_ids: int32 [batch, seq_length] (seq_length as built; pad with the spec's pad id, which attention masks).
    input_embeds: optional float [batch, seq_length, hidden] replacing the embedding lookup (soft prompts).
    prefix_keys_values: optional per-layer key/value prefixes (prefix tuning, P-tuning v2).
    positions, segments: int32 [batch, seq_length], for packed sequences: each token's position within its row
        and its row's number in the sequence (0 on padding). A token attends to the earlier tokens of its own
        row (and to the prefixes), never to another row's.
    """

    def __init__(self, llama):
        super().__init__(auto_prefix=False)  # keep MindFormers' parameter names
        self.llama = llama
        self.backbone = llama.model
        self.lm_head = llama.lm_head

    def embed(self, input_ids):
        return self.backbone.tok_embeddings(input_ids)

    def construct(self, input_ids, input_embeds=None, prefix_keys_values=None, positions=None, segments=None):
        if segments is None:
            hidden = self.backbone(input_ids, input_embeds=input_embeds, prefix_keys_values=prefix_keys_values)
        else:
            hidden = self.packed_backbone(input_ids, input_embeds, prefix_keys_values, positions, segments)
        logits = self.lm_head(hidden)
        return logits.astype("float32"), hidden

    def packed_backbone(self, input_ids, input_embeds, prefix_keys_values, positions, segments):
        model = self.backbone
        batch, length = input_ids.shape
        if input_embeds is None:
            input_embeds = model.tok_embeddings(input_ids)
        h = input_embeds.astype(model.dtype)
        rotary = model.freqs_mgr
        at = positions.reshape(-1)
        cos = ops.gather(rotary.freqs_cos, at, 0).reshape(batch, 1, length, -1)
        sin = ops.gather(rotary.freqs_sin, at, 0).reshape(batch, 1, length, -1)
        mask = self.packed_mask(positions, segments, prefix_keys_values)
        for i in range(model.num_layers):
            prefix = prefix_keys_values[i] if prefix_keys_values is not None else None
            h = model.layers[i](h, (cos, sin, rotary.swap_mask), mask, prefix_keys_values=prefix)
        return model.norm_out(h)

    def packed_mask(self, positions, segments, prefix_keys_values):
        """[batch, 1, T, P + T]: 1 (flash attention, uint8) or MASKED (added to the scores) where query t may not
        see key s: another row, a later position, or padding; the P prefix columns are visible to every query."""
        model = self.backbone
        same_row = segments.expand_dims(2) == segments.expand_dims(1)
        earlier = positions.expand_dims(2) >= positions.expand_dims(1)
        real_key = (segments != 0).expand_dims(1)
        hidden_from = 1 - ops.logical_and(ops.logical_and(same_row, earlier), real_key).astype(model.dtype)
        hidden_from = hidden_from.expand_dims(1)
        if prefix_keys_values is not None:
            batch, _, length, _ = hidden_from.shape
            visible = ops.zeros((batch, 1, length, prefix_keys_values[0].shape[2]), model.dtype)
            hidden_from = ops.concat((visible, hidden_from), -1)
        if model.use_flash_attention:
            return hidden_from.astype("uint8")
        return hidden_from * MASKED


def output_projection(network):
    """The output projection (MindFormers' lm_head) of a CausalLM, or of a PEFT wrapper around one (`.lm`)."""
    while not isinstance(network, CausalLM):
        network = network.lm
    return network.lm_head
