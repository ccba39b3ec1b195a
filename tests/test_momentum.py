"""Tests for carl.model.momentum (queue, EMA encoder, gather) and carl.model.carl_model.CarlModel."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from carl.model.carl_model import CarlModel, CarlOutput
from carl.model.momentum import MomentumEncoder, MomentumQueue, gather_across_processes


def numbered_keys(start: int, n: int, dim: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Key i is filled with the value i; its label is (i, -i)."""
    ids = torch.arange(start, start + n, dtype=torch.float)
    keys = ids[:, None].expand(n, dim).clone()
    labels = torch.stack([ids, -ids], dim=1)
    return keys, labels


# --------------------------------------------------------------------------- MomentumQueue


def test_queue_starts_empty():
    queue = MomentumQueue(5, 3)
    keys, labels = queue.contents()
    assert keys.shape == (0, 3) and labels.shape == (0, 2)
    assert int(queue.ptr) == 0 and int(queue.filled) == 0


def test_queue_wraps_around():
    queue = MomentumQueue(5, 3)
    queue.enqueue(*numbered_keys(0, 3))
    assert int(queue.ptr) == 3 and int(queue.filled) == 3
    keys, labels = queue.contents()
    assert keys[:, 0].tolist() == [0, 1, 2]
    assert labels.tolist() == [[0, 0], [1, -1], [2, -2]]

    queue.enqueue(*numbered_keys(3, 4))  # keys 3, 4 -> slots 3, 4; keys 5, 6 -> slots 0, 1
    assert int(queue.ptr) == 2
    assert int(queue.filled) == 5
    keys, labels = queue.contents()
    assert keys.shape == (5, 3)
    assert keys[:, 0].tolist() == [5, 6, 2, 3, 4]
    assert sorted(keys[:, 0].tolist()) == [2, 3, 4, 5, 6]  # the last 5 keys
    # labels travel with their keys
    assert labels[:, 0].tolist() == keys[:, 0].tolist()
    assert labels[:, 1].tolist() == (-keys[:, 0]).tolist()


def test_queue_batch_larger_than_queue_keeps_last_items():
    queue = MomentumQueue(5, 3)
    queue.enqueue(*numbered_keys(0, 7))
    keys, labels = queue.contents()
    assert int(queue.filled) == 5 and int(queue.ptr) == 0
    assert keys[:, 0].tolist() == [2, 3, 4, 5, 6]
    assert labels[:, 1].tolist() == [-2, -3, -4, -5, -6]


def test_queue_oversized_batch_after_partial_fill():
    queue = MomentumQueue(5, 3)
    queue.enqueue(*numbered_keys(0, 2))  # ptr 2
    queue.enqueue(*numbered_keys(10, 8))  # keeps 13..17 at slots 2, 3, 4, 0, 1
    keys, labels = queue.contents()
    assert int(queue.ptr) == 2 and int(queue.filled) == 5
    assert keys[:, 0].tolist() == [16, 17, 13, 14, 15]
    assert labels[:, 0].tolist() == [16, 17, 13, 14, 15]


def test_queue_exact_size_batch_and_repeated_wrap():
    queue = MomentumQueue(4, 2)
    for start in range(0, 40, 3):  # many enqueues of 3: 0..41
        queue.enqueue(*numbered_keys(start, 3, dim=2))
    keys, labels = queue.contents()
    last = start + 2
    assert sorted(keys[:, 0].tolist()) == list(range(last - 3, last + 1))
    assert int(queue.ptr) == (14 * 3) % 4
    assert torch.equal(labels[:, 0], keys[:, 0])


def test_queue_size_zero_is_noop():
    queue = MomentumQueue(0, 3)
    queue.enqueue(*numbered_keys(0, 4))
    keys, labels = queue.contents()
    assert keys.shape == (0, 3) and labels.shape == (0, 2)
    assert int(queue.ptr) == 0 and int(queue.filled) == 0


def test_queue_stores_detached_keys():
    queue = MomentumQueue(3, 2)
    keys = torch.ones(2, 2, requires_grad=True) * 2
    queue.enqueue(keys, torch.zeros(2, 2))
    stored, _ = queue.contents()
    assert not stored.requires_grad
    assert stored.tolist() == [[2, 2], [2, 2]]


def test_queue_state_is_saved_as_buffers():
    queue = MomentumQueue(5, 3)
    queue.enqueue(*numbered_keys(0, 3))
    state = queue.state_dict()
    assert set(state) == {"keys", "labels", "ptr", "filled"}
    other = MomentumQueue(5, 3)
    other.load_state_dict(state)
    assert torch.equal(other.contents()[0], queue.contents()[0])
    assert int(other.ptr) == 3
    # the loaded position and fill count carry on: the next keys go to slots 3, 4 and wrap to 0
    for q in (queue, other):
        q.enqueue(*numbered_keys(3, 3))
    assert torch.equal(other.keys, queue.keys) and torch.equal(other.labels, queue.labels)
    assert int(other.ptr) == int(queue.ptr) == 1 and int(other.filled) == 5


def test_queue_loaded_into_a_used_queue_replaces_its_position():
    saved = MomentumQueue(5, 3)
    saved.enqueue(*numbered_keys(0, 2))
    used = MomentumQueue(5, 3)
    used.enqueue(*numbered_keys(10, 4))
    used.load_state_dict(saved.state_dict())
    assert len(used.contents()[0]) == 2
    used.enqueue(*numbered_keys(2, 1))
    assert int(used.ptr) == 3 and int(used.filled) == 3


def test_gather_is_identity_without_process_group():
    x = torch.randn(4, 3)
    gathered, offset = gather_across_processes(x)
    assert gathered is x and offset == 0
    empty = torch.zeros(0, 3)
    assert gather_across_processes(empty)[0].shape == (0, 3)


# --------------------------------------------------------------------------- MomentumEncoder


def test_momentum_encoder_is_frozen_copy():
    torch.manual_seed(0)
    query = nn.Linear(4, 3)
    encoder = MomentumEncoder({"lin": query}, momentum=0.9)
    key = encoder.parts["lin"]
    assert key is not query
    for kp, qp in zip(key.parameters(), query.parameters()):
        assert kp.data_ptr() != qp.data_ptr()
        assert torch.equal(kp, qp)
        assert kp.requires_grad is False
        assert qp.requires_grad is True
    loss = query(torch.randn(2, 4)).pow(2).sum()
    loss.backward()
    assert all(p.grad is not None for p in query.parameters())
    assert all(p.grad is None for p in key.parameters())


def test_momentum_update_is_exact_ema():
    torch.manual_seed(0)
    query = nn.Linear(4, 3)
    encoder = MomentumEncoder({"lin": query}, momentum=0.75)
    key = encoder.parts["lin"]
    with torch.no_grad():
        key.weight.fill_(2.0)
        key.bias.fill_(-1.0)
        query.weight.fill_(6.0)
        query.bias.fill_(3.0)
    encoder.update({"lin": query})
    # 0.75 * 2 + 0.25 * 6 = 3; 0.75 * -1 + 0.25 * 3 = 0
    assert torch.equal(key.weight, torch.full((3, 4), 3.0))
    assert torch.equal(key.bias, torch.zeros(3))
    encoder.update({"lin": query})  # 0.75 * 3 + 0.25 * 6 = 3.75
    assert torch.equal(key.weight, torch.full((3, 4), 3.75))
    # query untouched
    assert torch.equal(query.weight, torch.full((3, 4), 6.0))


def test_momentum_update_random_values():
    torch.manual_seed(1)
    query = nn.Linear(5, 2)
    encoder = MomentumEncoder({"lin": query}, momentum=0.9)
    key = encoder.parts["lin"]
    with torch.no_grad():
        for p in key.parameters():
            p.copy_(torch.randn_like(p))
    before = [p.clone() for p in key.parameters()]
    encoder.update({"lin": query})
    for b, k, q in zip(before, key.parameters(), query.parameters()):
        torch.testing.assert_close(k, 0.9 * b + 0.1 * q, atol=1e-6, rtol=0)


def test_momentum_zero_copies():
    torch.manual_seed(2)
    query = nn.Linear(4, 3)
    encoder = MomentumEncoder({"lin": query}, momentum=0.0)
    with torch.no_grad():
        query.weight.add_(1.0)
        query.bias.mul_(-3.0)
    encoder.update({"lin": query})
    for kp, qp in zip(encoder.parts["lin"].parameters(), query.parameters()):
        assert torch.equal(kp, qp)


# --------------------------------------------------------------------------- CarlModel

B, T, H, P = 3, 6, 16, 8


_TEMPLATE = []


def tiny_backbone():
    """A fresh copy of one tiny randomly initialised BERT (built once per module)."""
    if not _TEMPLATE:
        from transformers import BertConfig, BertModel

        torch.manual_seed(0)
        config = BertConfig(
            vocab_size=50,
            hidden_size=H,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=32,
        )
        _TEMPLATE.append(BertModel(config, add_pooling_layer=False))
    return copy.deepcopy(_TEMPLATE[0])


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, 50, (B, T), generator=g)
    attention_mask = torch.ones(B, T, dtype=torch.long)
    attention_mask[1, 4:] = 0
    attention_mask[2, 2:] = 0
    input_ids[attention_mask == 0] = 0
    return input_ids, attention_mask


def make_model(**kwargs) -> CarlModel:
    torch.manual_seed(1)
    kwargs.setdefault("projection_dim", P)
    kwargs.setdefault("queue_size", 10)
    return CarlModel(tiny_backbone(), **kwargs)


def test_forward_shapes(batch):
    model = make_model().eval()
    out = model(*batch)
    assert isinstance(out, CarlOutput)
    assert out.embedding.shape == (B, H)
    assert out.query.shape == (B, P)
    torch.testing.assert_close(out.query.norm(dim=-1), torch.ones(B), atol=1e-5, rtol=0)
    assert out.va.shape == (B, 2)
    assert out.token_logits.shape == (B, T)
    with pytest.raises(RuntimeError, match="no input gradient"):
        model.input_gradient()


def test_mean_pooling_ignores_padding(batch):
    model = make_model().eval()
    input_ids, attention_mask = batch
    out = model(input_ids, attention_mask)
    # change a padded token id: the masked-mean embedding of row 2 stays the same
    changed = input_ids.clone()
    changed[2, 4] = 17
    out2 = model(changed, attention_mask)
    torch.testing.assert_close(out.embedding[2], out2.embedding[2], atol=1e-5, rtol=0)


def test_track_input_grad(batch):
    model = make_model().eval()
    out = model(*batch, track_input_grad=True)
    (out.va.sum() + out.query.sum()).backward()
    grad = model.input_gradient()
    assert grad.shape == (B, T, H)
    assert torch.isfinite(grad).all()
    assert grad.abs().sum() > 0


def test_only_requested_heads_are_computed(batch):
    model = make_model().eval()
    out = model(*batch, heads=("token_logits",))
    assert out.query is None and out.va is None
    assert out.token_logits.shape == (B, T)
    with pytest.raises(ValueError, match="unknown heads"):
        model(*batch, heads=("nope",))


def test_input_attribution_is_gradient_times_input(batch):
    """Per column k: the tracked embeddings' gradient of outputs[:, k].sum(), times the embeddings,
    summed over H; no parameter gradient, and the training path (backward, input_gradient) unchanged."""
    model = make_model().eval()
    out = model(*batch, track_input_grad=True)
    embeds = model._input_embeds
    attribution = model.input_attribution(out.va)
    assert attribution.shape == (B, T, 2) and all(p.grad is None for p in model.parameters())
    with pytest.raises(RuntimeError, match="no tracked input"):
        model.input_attribution(out.va)  # the pass's graph was released
    for k in range(2):
        tracked = model(*batch, track_input_grad=True)
        tracked.va[:, k].sum().backward()
        expected = (model.input_gradient() * embeds.detach()).sum(-1)
        torch.testing.assert_close(attribution[..., k], expected, atol=1e-6, rtol=1e-5)
        model.zero_grad(set_to_none=True)


def test_track_input_grad_off_under_no_grad(batch):
    model = make_model().eval()
    with torch.no_grad():
        model(*batch, track_input_grad=True)
    with pytest.raises(RuntimeError, match="no input gradient"):
        model.input_gradient()


def test_inputs_embeds_path_equals_input_ids_path(batch):
    model = make_model().eval()
    plain = model(*batch)
    tracked = model(*batch, track_input_grad=True)
    torch.testing.assert_close(plain.embedding, tracked.embedding.detach(), atol=1e-6, rtol=0)
    torch.testing.assert_close(plain.query, tracked.query.detach(), atol=1e-6, rtol=0)
    torch.testing.assert_close(plain.token_logits, tracked.token_logits.detach(), atol=1e-6, rtol=0)


def test_encode_keys(batch):
    model = make_model().eval()
    keys = model.encode_keys(*batch)
    assert keys.shape == (B, P)
    assert not keys.requires_grad
    assert keys.grad_fn is None
    torch.testing.assert_close(keys.norm(dim=-1), torch.ones(B), atol=1e-5, rtol=0)
    # right after construction the key encoder is a copy of the query encoder
    torch.testing.assert_close(keys, model(*batch).query.detach(), atol=1e-5, rtol=0)


def test_backward_leaves_key_encoder_without_grad(batch):
    model = make_model().train()
    out = model(*batch, track_input_grad=True)
    keys = model.encode_keys(*batch)
    loss = (out.query @ keys.T).sum() + out.va.pow(2).sum() + out.token_logits.sum()
    loss.backward()
    assert all(p.grad is None for p in model.key_encoder.parameters())
    assert all(not p.requires_grad for p in model.key_encoder.parameters())
    assert model.backbone.get_input_embeddings().weight.grad is not None
    assert all(p.grad is not None for p in model.projection.parameters())
    # the key encoder does not share storage with the query encoder
    query_ptrs = {p.data_ptr() for p in model.backbone.parameters()}
    assert not query_ptrs & {p.data_ptr() for p in model.key_encoder.parameters()}


def test_momentum_update_moves_key_encoder_toward_query(batch):
    model = make_model(momentum=0.5).eval()
    with torch.no_grad():
        for p in list(model.backbone.parameters()) + list(model.projection.parameters()):
            p.add_(0.1 * torch.randn_like(p))
    key_parts = model.key_encoder.parts
    query_params = list(model.backbone.parameters()) + list(model.projection.parameters())
    key_params = list(key_parts["backbone"].parameters()) + list(key_parts["projection"].parameters())
    assert len(query_params) == len(key_params)
    before = [k.clone() for k in key_params]
    distance_before = sum((k - q).pow(2).sum() for k, q in zip(key_params, query_params))
    model.momentum_update()
    for b, k, q in zip(before, key_params, query_params):
        torch.testing.assert_close(k, 0.5 * b + 0.5 * q, atol=1e-6, rtol=0)
    distance_after = sum((k - q).pow(2).sum() for k, q in zip(key_params, query_params))
    assert distance_after.item() == pytest.approx(0.25 * distance_before.item(), rel=1e-4)
    # keys now differ from the initial ones but are still unit vectors
    keys = model.encode_keys(*batch)
    torch.testing.assert_close(keys.norm(dim=-1), torch.ones(B), atol=1e-5, rtol=0)


def test_model_without_key_encoder(batch):
    model = make_model(use_key_encoder=False)
    assert model.key_encoder is None
    assert model.queue.size == 0
    with pytest.raises(RuntimeError):
        model.encode_keys(*batch)
    model.momentum_update()  # no-op, no error


def test_queue_dimensions(batch):
    model = make_model(queue_size=7)
    assert model.queue.keys.shape == (7, P)
    assert model.queue.labels.shape == (7, 2)


def test_label_statistics_and_standardise():
    model = make_model()
    labels = torch.tensor([[0.1, 0.2], [0.3, 0.6], [0.5, 1.0]])
    model.set_label_statistics(labels)
    torch.testing.assert_close(model.label_mean, torch.tensor([0.3, 0.6]))
    # unbiased std: valence sqrt(((0.2)^2 * 2) / 2) = 0.2, arousal 0.4
    torch.testing.assert_close(model.label_std, torch.tensor([0.2, 0.4]))
    z = model.standardise(labels)
    torch.testing.assert_close(z, torch.tensor([[-1.0, -1.0], [0.0, 0.0], [1.0, 1.0]]))
    torch.testing.assert_close(model.destandardise(z), labels)  # the inverse, in z's dtype
    assert model.destandardise(z.double()).dtype == torch.float64
    # constant labels: std clamped, no division by zero
    model.set_label_statistics(torch.full((4, 2), 0.5))
    assert torch.all(model.label_std > 0)
    assert torch.isfinite(model.standardise(torch.rand(3, 2))).all()
    # statistics are saved with the model
    state = model.state_dict()
    assert "label_mean" in state and "label_std" in state


def test_cls_pooling(batch):
    model = make_model(pooling="cls").eval()
    out = model(*batch)
    hidden = model.backbone(input_ids=batch[0], attention_mask=batch[1]).last_hidden_state
    torch.testing.assert_close(out.embedding, hidden[:, 0], atol=1e-6, rtol=0)


def test_mean_pooling_value(batch):
    model = make_model().eval()
    out = model(*batch)
    input_ids, mask = batch
    hidden = model.backbone(input_ids=input_ids, attention_mask=mask).last_hidden_state
    expected = torch.stack([hidden[i, : int(mask[i].sum())].mean(0) for i in range(B)])
    torch.testing.assert_close(out.embedding, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.query, F.normalize(model.projection(expected), dim=-1), atol=1e-5, rtol=0)
