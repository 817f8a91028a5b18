"""Per-part BatchNorm (METHOD.md §3): one training forward over the concatenated parts equals one
forward per part, in outputs and in running statistics; the GRU stages have no BatchNorm."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from abaw_lightning.models import MultitaskCNN
from abaw_lightning.stages import CnnStudent, CnnTeacher, GruTeacher

OPTIMIZER = {"lr": 1e-4, "betas": [0.5, 0.999]}
SIZE = 32
OUTPUTS = ("expr", "va", "expr_feature", "va_feature")
NAN = float("nan")


def part_batches(sizes: tuple[int, int, int], seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """Three parts of different image statistics (as AffectNet crops beside Aff-Wild2 frames)."""
    generator = torch.Generator().manual_seed(seed)
    batches = {}
    for index, (part, n) in enumerate(zip(("expr", "va", "expr_va"), sizes, strict=True)):
        low = 60 * index
        images = torch.randint(low, low + 120, (n, 3, SIZE, SIZE), generator=generator)
        expr = torch.randint(0, 7, (n,), generator=generator)
        va = torch.rand(n, 2, generator=generator) * 2 - 1
        batches[part] = {
            "image": images.to(torch.uint8),
            "expr": expr if part != "va" else torch.full((n,), -1),
            "va": va if part != "expr" else torch.full((n, 2), NAN),
        }
    return batches


def stage(kind: type, channels_last: bool, batchnorm: str = "per_part", seed: int = 0):
    torch.manual_seed(seed)
    model = {"arch": "resnet18", "dropout": 0.0, "batchnorm": batchnorm}  # dropout off: exact
    module = kind(model=model, optimizer=OPTIMIZER, channels_last=channels_last)
    if kind is CnnStudent:
        teacher = MultitaskCNN(**model)
        teacher.load_state_dict(module.model.state_dict())
        teacher.backbone.resnet.layer1[0].conv1.weight.data.mul_(0.5)  # not the student
        module.attach_frozen("teacher", teacher)
    return module.train()


def per_part(network: nn.Module, batches, channels_last: bool) -> dict[str, dict]:
    """The reference: one forward per part, in order, as the released code ran them."""
    outputs = {}
    for part, batch in batches.items():
        images = batch["image"]
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        outputs[part] = network(images)
    return outputs


def eval_outputs(network: nn.Module, batches) -> dict[str, torch.Tensor]:
    images = torch.cat([batch["image"] for batch in batches.values()])
    with torch.no_grad():
        return network.eval()(images)


def assert_outputs_close(found, expected, atol=1e-5):
    for key in OUTPUTS:
        torch.testing.assert_close(found[key], expected[key], atol=atol, rtol=0, msg=key)


@pytest.mark.parametrize(
    ("kind", "channels_last", "sizes"),
    [
        (CnnTeacher, False, (4, 4, 4)),
        (CnnTeacher, True, (4, 4, 4)),
        (CnnStudent, False, (4, 4, 4)),
        (CnnStudent, True, (4, 4, 4)),
        (CnnTeacher, True, (3, 6, 4)),  # unequal parts
    ],
)
def test_one_forward_equals_one_forward_per_part(kind, channels_last, sizes):
    batches = part_batches(sizes)
    module = stage(kind, channels_last)
    reference = copy.deepcopy(module.model)
    teacher_before = None if module.teacher is None else copy.deepcopy(module.teacher.state_dict())

    outputs, labels = module.training_outputs(batches)
    expected = per_part(reference, batches, channels_last)
    for part in batches:
        assert_outputs_close(outputs[part], expected[part])

    # Running statistics: three sequential updates per forward, as three forwards.
    buffers = dict(reference.named_buffers())
    for name, value in module.model.named_buffers():
        torch.testing.assert_close(value, buffers[name], atol=1e-5, rtol=0, msg=name)
    assert int(module.model.backbone.resnet.bn1.num_batches_tracked) == 3
    assert_outputs_close(eval_outputs(module.model, batches), eval_outputs(reference, batches))
    module.model.train(), reference.train()

    # The loss (the student's includes the eval-mode teacher) and its gradients are the per-part
    # ones (each gradient to 1e-5 of its tensor's largest; an Adam step would turn the rounding of
    # near-zero gradients into +-lr steps).
    loss = module.loss(outputs, labels)
    if kind is CnnStudent:
        teacher_outputs = {part: module.teacher(batch["image"]) for part, batch in batches.items()}
        reference_loss = module.distillation_loss(expected, teacher_outputs, batches)
        for key, value in module.teacher.state_dict().items():
            assert torch.equal(value, teacher_before[key]), f"teacher {key} changed"
    else:
        reference_loss = module.loss(expected, batches)
    torch.testing.assert_close(loss, reference_loss, atol=1e-5, rtol=0)
    loss.backward()
    reference_loss.backward()
    gradients = {name: value.grad for name, value in reference.named_parameters()}
    for name, value in module.model.named_parameters():
        scale = max(1.0, gradients[name].abs().max().item())
        torch.testing.assert_close(value.grad, gradients[name], atol=1e-5 * scale, rtol=0, msg=name)


def test_joint_batchnorm_is_the_shared_statistics_switch():
    """``batchnorm: joint`` keeps one set of statistics over all parts: not the per-part result."""
    batches = part_batches((4, 4, 4))
    module = stage(CnnTeacher, channels_last=True, batchnorm="joint")
    reference = copy.deepcopy(module.model)
    outputs, _ = module.training_outputs(batches)
    expected = per_part(copy.deepcopy(reference), batches, channels_last=True)
    assert (outputs["va"]["va"] - expected["va"]["va"]).abs().max() > 1e-2
    assert int(module.model.backbone.resnet.bn1.num_batches_tracked) == 1
    joint = torch.cat([batch["image"] for batch in batches.values()])
    reference(joint.contiguous(memory_format=torch.channels_last))
    assert_outputs_close(eval_outputs(module.model, batches), eval_outputs(reference, batches))


def test_eval_mode_ignores_part_sizes():
    network = MultitaskCNN("resnet18").eval()
    images = part_batches((2, 3, 2))["va"]["image"]
    with torch.no_grad():
        assert_outputs_close(network(images, part_sizes=[1, 2]), network(images), atol=0)


def test_gru_stages_train_without_batchnorm():
    """The GRU stage's only BatchNorms are the frozen CNN's, kept in eval mode by `train()`."""
    module = GruTeacher(OPTIMIZER)
    cnn = MultitaskCNN("resnet18")
    module.attach_frozen("cnn", cnn)
    module.train()
    norm = nn.modules.batchnorm._NormBase
    assert not any(isinstance(layer, norm) for layer in module.modules()) and not cnn.training
    before = copy.deepcopy(cnn.state_dict())
    windows = {
        "image": torch.randint(0, 256, (2, 4, 3, SIZE, SIZE), dtype=torch.uint8),
        "expr": torch.zeros(2, 4, dtype=torch.long),
        "va": torch.zeros(2, 4, 2),
        "mask": torch.ones(2, 4, dtype=torch.bool),
    }
    module.training_outputs({"expr": windows, "va": windows})
    assert all(torch.equal(value, before[key]) for key, value in cnn.state_dict().items())
