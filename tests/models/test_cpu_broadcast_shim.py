"""mindtune.shims.cpu_explicit_broadcasts: on CPU every broadcasting primitive it names is swapped (the values are
checked against numpy by test_llama_parity, which runs on the shimmed model)."""
from mindtune.shims import _BROADCASTING


def test_every_named_broadcasting_primitive_is_swapped_on_cpu():
    from mindspore.ops.primitive import Primitive

    from mindtune.device import resolve_profile, setup_context
    from mindtune.models.build import build_llama
    from mindtune.models.spec import get_preset
    from mindtune.shims import cpu_explicit_broadcasts

    profile = resolve_profile("cpu")
    setup_context(profile)
    llama = build_llama(get_preset("tiny"), profile, seq_length=16)
    seen = {}
    for _, cell in llama.cells_and_names():
        for name in _BROADCASTING.get(type(cell).__name__, ()):
            if hasattr(cell, name):
                seen[type(cell).__name__] = seen.get(type(cell).__name__, 0) + 1
                assert not isinstance(getattr(cell, name), Primitive), f"{type(cell).__name__}.{name}"
    # 2 layers: the attention mask add; 5 RMSNorms (2 per layer and the final one) x 2; 2 rotary embeddings x 3
    assert seen == {"LLamaAttention": 2, "LlamaRMSNorm": 10, "RotaryEmbedding": 6}
    assert cpu_explicit_broadcasts(llama) == 0          # already swapped: nothing left to do
