"""The MoCo module: momentum rule, queue order, shuffle BN on one device and across two gloo processes."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from moco_bench.core import distributed
from moco_bench.models.moco import MoCo, SplitBatchNorm2d, make_encoder


def tiny(**kw) -> MoCo:
    torch.manual_seed(0)
    args = dict(arch="resnet18", dim=16, K=32, m=0.9, T=0.2, mlp=True, bn_splits=1)
    args.update(kw)
    return MoCo(**args)


def images(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_layout_matches_the_official_builder():
    model = tiny()
    keys = set(model.state_dict())
    assert {"queue", "queue_ptr"} <= keys
    assert {k.split(".")[0] for k in keys} == {"encoder_q", "encoder_k", "queue", "queue_ptr"}
    # v2's head: fc.0 (hidden Linear), fc.2 (output Linear), as main_moco.py --mlp names them
    assert model.state_dict()["encoder_q.fc.0.weight"].shape == (512, 512)
    assert model.state_dict()["encoder_q.fc.2.weight"].shape == (16, 512)
    assert model.queue.shape == (16, 32)
    assert torch.allclose(model.queue.norm(dim=0), torch.ones(32))
    assert not any(p.requires_grad for p in model.encoder_k.parameters())


def test_one_step_updates_query_and_moves_key_by_the_momentum_rule():
    model = tiny(m=0.9, bn_splits=2).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    q0 = [p.detach().clone() for p in model.encoder_q.parameters()]
    # make the key encoder differ from the query encoder, so the rule is tested on distinct values
    with torch.no_grad():
        for p in model.encoder_k.parameters():
            p.add_(0.01)
    k0 = [p.detach().clone() for p in model.encoder_k.parameters()]

    logits, labels = model(images(8, 1), images(8, 2))
    assert logits.shape == (8, 1 + 32) and labels.tolist() == [0] * 8
    loss = F.cross_entropy(logits, labels)
    opt.zero_grad()
    loss.backward()
    opt.step()

    q1 = list(model.encoder_q.parameters())
    changed = [not torch.equal(a, b) for a, b in zip(q0, q1)]
    assert sum(changed) == len(changed), "every query parameter gets a gradient step"
    for before_k, before_q, after_k in zip(k0, q0, model.encoder_k.parameters()):
        # theta_k <- m theta_k + (1 - m) theta_q, with theta_q as it was when the step began
        assert torch.allclose(after_k, 0.9 * before_k + 0.1 * before_q, rtol=0, atol=1e-6)
        assert after_k.grad is None


def test_queue_holds_the_last_keys_in_order():
    model = tiny(K=32)
    batches = [F.normalize(torch.randn(8, 16), dim=1) for _ in range(5)]
    for b in batches:
        model.enqueue(b)
    # 5 batches of 8 in a ring of 32: the oldest (batch 0) is gone; the pointer is after batch 4
    assert int(model.queue_ptr) == 8
    expected = torch.cat([batches[4], batches[1], batches[2], batches[3]]).T
    assert torch.equal(model.queue, expected)
    with pytest.raises(ValueError, match="multiple"):
        model.enqueue(torch.randn(6, 16))


def test_forward_enqueues_this_steps_normalized_keys():
    model = tiny(bn_splits=1).train()
    im_k = images(8, 3)
    model(images(8, 4), im_k)
    with torch.no_grad():
        expected = F.normalize(model.encoder_k(im_k), dim=1)  # one BN group: shuffling changes nothing
    assert torch.allclose(model.queue[:, :8], expected.T, atol=1e-5)
    assert int(model.queue_ptr) == 8


def test_float64_model_computes_float64_logits_against_its_queue():
    """A model in float64 keeps float64 logits (wider than the fp32 floor the autocast path keeps)."""
    model = tiny().double().train()
    logits, labels = model(images(8, 4).double(), images(8, 3).double())
    assert logits.dtype == torch.float64 and logits.shape == (8, 33) and labels.tolist() == [0] * 8
    assert torch.isfinite(logits).all()


def test_split_batchnorm_is_batchnorm_per_group():
    torch.manual_seed(0)
    split, plain = SplitBatchNorm2d(3, num_splits=2), torch.nn.BatchNorm2d(3)
    plain.load_state_dict(split.state_dict())
    x = torch.randn(8, 3, 4, 4) * torch.arange(1.0, 9.0)[:, None, None, None]
    out = split(x)
    groups = [plain(x[j::2]) for j in range(2)]  # sample i is in group i % 2
    assert torch.allclose(out[0::2], groups[0], atol=1e-5) and torch.allclose(out[1::2], groups[1], atol=1e-5)
    # running statistics: each group's momentum update of the old value (0), averaged over the groups
    expected_mean = torch.stack([0.1 * x[j::2].mean((0, 2, 3)) for j in range(2)]).mean(0)
    assert torch.allclose(split.running_mean, expected_mean, atol=1e-5)
    assert int(split.num_batches_tracked) == 1
    split.eval()
    plain.load_state_dict(split.state_dict())
    assert torch.equal(split(x), plain.eval()(x))


def test_single_device_shuffle_bn_deals_keys_to_groups_with_their_own_statistics():
    model = tiny(bn_splits=2).train()
    im_q, im_k = images(8, 5), images(8, 6)
    torch.manual_seed(123)
    model(im_q, im_k)
    torch.manual_seed(123)
    perm = torch.randperm(8)  # the key shuffle is the forward's first draw
    assert set(perm[0::2].tolist()) != {0, 2, 4, 6}, "this seed moves keys to the other group"
    reference = make_encoder("resnet18", 16, mlp=True)  # plain BatchNorm2d, the same weights
    reference.load_state_dict(model.encoder_k.state_dict())
    with torch.no_grad():
        shuffled = im_k[perm]
        out = torch.empty(8, 16)
        for j in range(2):
            out[j::2] = reference(shuffled[j::2])
        expected = F.normalize(out[torch.argsort(perm)], dim=1)
        whole_batch = F.normalize(reference(im_k), dim=1)
    assert torch.allclose(model.queue[:, :8], expected.T, atol=1e-5)
    assert not torch.allclose(model.queue[:, :8], whole_batch.T, atol=1e-3), "BN statistics differ per group"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_rank_worker(rank: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    env = distributed.setup("cpu")
    try:
        assert env.world_size == 2 and distributed.world_size() == 2
        gathered = distributed.concat_all_gather(torch.tensor([rank, 10 + rank]))
        assert gathered.tolist() == [0, 10, 1, 11]

        model = tiny(K=16).train()  # across ranks, each rank is one BN group
        all_k = torch.cat([images(4, 100), images(4, 101)])  # rank r holds all_k[4r:4r+4]
        torch.manual_seed(7 + rank)  # rank 0's permutation is the one broadcast
        model(images(4, 200 + rank), all_k[4 * rank:4 * rank + 4])

        torch.manual_seed(7)
        perm = torch.randperm(8)
        assert set(perm[:4].tolist()) & {4, 5, 6, 7}, "this seed sends rank 1's keys to rank 0"
        with torch.no_grad():  # each rank's BN sees the images dealt to it
            per_rank = [model.encoder_k(all_k[perm.view(2, -1)[r]]) for r in range(2)]
            expected = F.normalize(torch.cat(per_rank)[torch.argsort(perm)], dim=1)
        # the queue holds the keys of both ranks, in rank order, identically on both ranks
        assert int(model.queue_ptr) == 8
        assert torch.allclose(model.queue[:, :8], expected.T, atol=1e-5)
        queues = distributed.concat_all_gather(model.queue[None])
        assert torch.equal(queues[0], queues[1])

        x = torch.arange(4.0)[:, None] + 100 * rank
        shuffled, idx = distributed.shuffle_across_ranks(x)
        assert torch.equal(distributed.unshuffle_across_ranks(shuffled, idx), x)
    finally:
        distributed.teardown(env)


def test_two_gloo_processes_exchange_keys_and_shuffle_bn_across_ranks():
    mp.spawn(_two_rank_worker, args=(_free_port(),), nprocs=2, join=True)


def test_split_needs_a_batch_divisible_by_the_groups():
    model = tiny(bn_splits=3).train()
    with pytest.raises(ValueError, match="bn_splits"):
        model(images(8, 1), images(8, 2))


def test_key_encoder_starts_as_a_copy():
    model = tiny()
    for a, b in zip(model.encoder_q.state_dict().values(), model.encoder_k.state_dict().values()):
        assert torch.equal(a, b)
