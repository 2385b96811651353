"""Packed sequences through the model: every row's logits, the loss and the gradients are those of the same rows
padded one per sequence (a token sees only its own row, at its own positions)."""
import numpy as np
import pytest

from reference.tiny import lively_weights

from mindtune.models.spec import PRESETS

SEQ = 16
LENGTHS = (5, 7, 3)
IGNORE = -100


@pytest.fixture(scope="module")
def model():
    from mindtune.device import resolve_profile, setup_context
    from mindtune.models.build import build_llama, load_weights
    from mindtune.models.causal_lm import CausalLM

    spec = PRESETS["tiny"]
    profile = resolve_profile("cpu")
    setup_context(profile, graph_mode=True, seed=0)
    llama = build_llama(spec, profile, seq_length=SEQ, batch_size=1, initialise=False)
    load_weights(llama, lively_weights(spec, seed=2))
    return spec, CausalLM(llama)


def rows_padded_and_packed(spec):
    """Three rows with labels on their second half, as a padded [3, SEQ] batch and one packed [1, SEQ] sequence."""
    rng = np.random.default_rng(5)
    rows = [rng.integers(1, spec.vocab_size, n).astype(np.int32) for n in LENGTHS]   # no pad id (0)
    padded = np.zeros((3, SEQ), np.int32), np.full((3, SEQ), IGNORE, np.int32)
    packed = [np.zeros((1, SEQ), np.int32), np.full((1, SEQ), IGNORE, np.int32), np.zeros((1, SEQ), np.int32),
              np.zeros((1, SEQ), np.int32)]
    at = 0
    for i, row in enumerate(rows):
        n = len(row)
        labels = np.where(np.arange(n - 1) >= n // 2, row[1:], IGNORE)
        padded[0][i, :n], padded[1][i, :n - 1] = row, labels
        packed[0][0, at:at + n], packed[1][0, at:at + n - 1] = row, labels
        packed[2][0, at:at + n], packed[3][0, at:at + n] = np.arange(n), i + 1
        at += n
    return padded, tuple(packed)


def tensors(arrays):
    import mindspore as ms
    return [ms.Tensor(a) for a in arrays]


def test_each_packed_row_has_its_unpadded_logits(model):
    spec, lm = model
    lm.set_train(False)
    padded, packed = rows_padded_and_packed(spec)
    alone, _ = lm(*tensors(padded[:1]))
    ids, _, positions, segments = tensors(packed)
    together, _ = lm(ids, None, None, positions, segments)
    alone, together = alone.asnumpy(), together.asnumpy()
    at = 0
    for i, n in enumerate(LENGTHS):
        np.testing.assert_allclose(together[0, at:at + n], alone[i, :n], rtol=0, atol=2e-5)
        at += n
    # the check can fail: with one segment for all three rows, row 2 sees row 1 and its logits move
    leaky, _ = lm(ids, None, None, positions, *tensors([(packed[3] > 0).astype(np.int32)]))
    assert np.abs(leaky.asnumpy()[0, 5:12] - alone[1, :7]).max() > 1e-2
    # rotary attention depends on relative positions only, so a row shifted as a whole keeps its logits (the
    # positions restart per row all the same, as Hugging Face's packing does, to stay within trained positions)
    shifted, _ = lm(ids, None, None, *tensors([np.arange(SEQ, dtype=np.int32)[None]]), segments)
    np.testing.assert_allclose(shifted.asnumpy()[0, 5:12], alone[1, :7], rtol=0, atol=2e-5)


@pytest.mark.parametrize("method", ["lora_like_full", "prefix"])
def test_packed_loss_and_gradients_equal_the_padded_batch(model, method):
    import mindspore as ms

    from mindtune.engine.buckets import gather_labels
    from mindtune.engine.losses import CausalLMLoss
    from mindtune.peft.prefix import PrefixMLP
    from mindtune.peft.virtual import PrefixLM

    spec, lm = model
    network = lm if method == "lora_like_full" else PrefixLM(lm, PrefixMLP(spec, 3, 16, seed=1))
    loss_cell = CausalLMLoss(network)
    loss_cell.set_train(True)
    params = [p for p in loss_cell.trainable_params() if "prefix" in p.name or "layers.1." in p.name]

    def loss(*batch):
        return loss_cell(*batch)[0]

    grad = ms.value_and_grad(loss, None, params)
    padded, packed = (gather_labels(batch) for batch in rows_padded_and_packed(spec))
    loss_a, grads_a = grad(*tensors(padded))
    loss_b, grads_b = grad(*tensors(packed))
    assert abs(float(loss_a.asnumpy()) - float(loss_b.asnumpy())) < 1e-5
    for p, a, b in zip(params, grads_a, grads_b):
        np.testing.assert_allclose(b.asnumpy(), a.asnumpy(), rtol=1e-4, atol=1e-6, err_msg=p.name)
    # the check can fail: one segment for all three rows lets them attend to each other
    leaky = list(packed)
    leaky[4] = (packed[4] > 0).astype(np.int32)
    assert abs(float(grad(*tensors(leaky))[0].asnumpy()) - float(loss_a.asnumpy())) > 1e-3
