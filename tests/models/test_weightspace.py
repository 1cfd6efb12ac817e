"""Flat vectors, stacked ensembles, batched forward and evaluation."""

import pytest
import torch

from models.architectures import ARCHITECTURES, get_architecture
from models.weightspace import (
    LOOP_SLICE,
    StateDictError,
    WeightLayout,
    batched_evaluate,
    batched_forward,
    check_state_dict,
    stack_state_dicts,
    unstack_state_dicts,
)

SMALL = [n for n in ARCHITECTURES if n != "resnet18-cifar"]


def members(name: str, count: int) -> list[torch.nn.Module]:
    arch = get_architecture(name)
    nets = []
    for seed in range(count):
        torch.manual_seed(seed)
        nets.append(arch.build())
    return nets


@pytest.mark.parametrize("name", SMALL)
def test_flatten_unflatten_is_bit_exact(name):
    net = members(name, 1)[0]
    layout = WeightLayout.from_module(net, include_buffers=True)
    state = net.state_dict()
    vector = layout.flatten(state)
    assert vector.shape == (layout.dim,)
    restored = layout.unflatten(vector)
    assert list(restored) == layout.keys
    for key in layout.keys:
        assert torch.equal(restored[key], state[key])


def test_layout_order_is_state_dict_order_and_skips_integer_buffers():
    net = members("cnn-fashion", 1)[0]
    params_only = WeightLayout.from_module(net)
    with_buffers = WeightLayout.from_module(net, include_buffers=True)
    assert params_only.keys == [k for k, _ in net.named_parameters()]
    assert with_buffers.keys == [k for k, v in net.state_dict().items() if v.is_floating_point()]
    assert not any(k.endswith("num_batches_tracked") for k in with_buffers.keys)
    assert params_only.dim == sum(p.numel() for p in net.parameters())


def test_stacked_flatten_matches_per_member():
    nets = members("mlp-digits", 4)
    layout = WeightLayout.from_module(nets[0])
    stacked = stack_state_dicts([n.state_dict() for n in nets])
    matrix = layout.flatten_stacked(stacked)
    assert matrix.shape == (4, layout.dim)
    for i, net in enumerate(nets):
        assert torch.equal(matrix[i], layout.flatten(net.state_dict()))
    back = layout.unflatten_stacked(matrix)
    for i, sd in enumerate(unstack_state_dicts({k: back[k] for k in layout.keys})):
        for k, v in sd.items():
            assert torch.equal(v, nets[i].state_dict()[k])


@pytest.mark.parametrize("name", SMALL)
@pytest.mark.parametrize("train", [False, True])
def test_batched_forward_equals_separate_forwards(name, train):
    nets = members(name, 3)
    arch = get_architecture(name)
    x = torch.randn(5, *arch.input_shape)
    stacked = {k: v.clone() for k, v in stack_state_dicts([n.state_dict() for n in nets]).items()}
    module = arch.build().train(train)
    batched = batched_forward(module, stacked, x)
    for i, net in enumerate(nets):
        net.train(train)
        assert torch.allclose(batched[i], net(x), atol=1e-5, rtol=0)
        if train:  # BatchNorm running statistics were updated exactly like a separate forward
            for key, value in net.state_dict().items():
                assert torch.allclose(stacked[key][i].float(), value.float(), atol=1e-6), key


def test_networks_run_one_by_one_on_slices_of_a_large_batch_give_the_same_logits():
    nets = members("cnn-fashion", 2)  # convolutions: one network at a time, LOOP_SLICE images per call
    x = torch.randn(LOOP_SLICE + 7, *get_architecture("cnn-fashion").input_shape)
    stacked = stack_state_dicts([n.state_dict() for n in nets])
    batched = batched_forward(get_architecture("cnn-fashion").build().eval(), stacked, x)
    assert batched.shape == (2, LOOP_SLICE + 7, 10)
    for i, net in enumerate(nets):
        assert torch.allclose(batched[i], net.eval()(x), atol=1e-5, rtol=0)


def test_batched_evaluate_matches_manual_accuracy():
    nets = members("mlp-digits", 3)
    arch = get_architecture("mlp-digits")
    images, labels = torch.randn(50, *arch.input_shape), torch.randint(0, 10, (50,))
    stacked = stack_state_dicts([n.state_dict() for n in nets])
    loss, accuracy = batched_evaluate(arch.build(), stacked, images, labels, batch_size=16)
    for i, net in enumerate(nets):
        logits = net.eval()(images)
        assert accuracy[i].item() == pytest.approx((logits.argmax(1) == labels).float().mean().item())
        assert loss[i].item() == pytest.approx(
            torch.nn.functional.cross_entropy(logits, labels).item(), rel=1e-5
        )


def test_check_state_dict_names_missing_extra_and_misshaped_keys():
    reference = members("mlp-digits", 1)[0].state_dict()
    broken = dict(reference)
    del broken["layers.0.bias"]
    broken["layers.9.weight"] = torch.zeros(1)
    broken["layers.1.weight"] = torch.zeros(3, 3)
    with pytest.raises(StateDictError) as info:
        check_state_dict(broken, reference)
    message = str(info.value)
    assert "missing keys: layers.0.bias" in message
    assert "unexpected keys: layers.9.weight" in message
    assert "layers.1.weight: expected (32, 32), got (3, 3)" in message


def test_stacking_mismatched_state_dicts_is_refused():
    a = members("mlp-digits", 1)[0].state_dict()
    b = members("mlp-fashion", 1)[0].state_dict()
    with pytest.raises(StateDictError, match="layers.0.weight"):
        stack_state_dicts([a, b])
    stacked = stack_state_dicts([a, a])
    stacked["layers.0.bias"] = stacked["layers.0.bias"][:1]
    with pytest.raises(StateDictError, match="differ in length"):
        check_state_dict(stacked, a, stacked=True)


def test_batchnorm_recalibration_matches_cumulative_average():
    nets = members("cnn-fashion", 3)
    arch = get_architecture("cnn-fashion")
    images = torch.randn(400, *arch.input_shape)
    stacked = stack_state_dicts([n.state_dict() for n in nets])
    from models.weightspace import recalibrate_batchnorm

    recalibrated = recalibrate_batchnorm(arch.build(), stacked, images, batch_size=100)
    reference = nets[2]
    for m in reference.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # PyTorch's exact cumulative average
    reference.train()
    with torch.no_grad():
        for start in range(0, 400, 100):
            reference(images[start : start + 100])
    for key, value in reference.state_dict().items():
        if "running" in key:
            assert torch.allclose(recalibrated[key][2], value, atol=1e-6), key
        elif value.is_floating_point():
            assert torch.equal(recalibrated[key][2], value), "parameters must be untouched"
    mlp = stack_state_dicts([n.state_dict() for n in members("mlp-digits", 2)])
    same = recalibrate_batchnorm(get_architecture("mlp-digits").build(), mlp, torch.randn(10, 1, 8, 8))
    assert all(torch.equal(same[k], mlp[k]) for k in mlp)
