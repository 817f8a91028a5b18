"""The multitask CNN: output shapes, head features, weights files and their errors."""

from urllib.error import URLError

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from abaw_lightning.errors import UserError
from abaw_lightning.models import MultitaskCNN
from abaw_lightning.models.checkpoints import load_cnn
from abaw_lightning.models.weights import FERPLUS_MEAN, IMAGENET_MEAN, ferplus_key_map
from abaw_lightning.stages import CnnTeacher


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
@pytest.mark.parametrize("size", [112, 64])
def test_output_shapes(arch, size):
    model = MultitaskCNN(arch=arch).eval()
    images = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8)
    with torch.no_grad():
        out = model(images)
    assert out["expr"].shape == (2, 7)
    assert out["va"].shape == (2, 40)
    assert out["expr_feature"].shape == (2, 128)
    assert out["va_feature"].shape == (2, 128)


def test_head_feature_feeds_the_logits():
    model = MultitaskCNN(arch="resnet18").eval()
    images = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        out = model(images)
        assert torch.allclose(model.expr_head.classify(out["expr_feature"]), out["expr"])
        assert torch.allclose(model.va_head.classify(out["va_feature"]), out["va"])


def test_head_layers_follow_figure_2():
    head = MultitaskCNN(arch="resnet18").expr_head
    kinds = [nn.BatchNorm1d, nn.Linear, nn.ReLU, nn.BatchNorm1d, nn.Dropout, nn.Linear]
    layers = [*head.embed, *head.classify]
    assert all(isinstance(layer, kind) for layer, kind in zip(layers, kinds, strict=True))
    assert head.embed[1].out_features == 128
    assert head.classify[0].p == 0.5


def test_uint8_and_float_pixels_agree():
    model = MultitaskCNN(arch="resnet18").eval()
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.allclose(model(images)["va"], model(images.float())["va"], atol=1e-5)


def test_weights_file_round_trip(tmp_path):
    source = MultitaskCNN(arch="resnet18")
    path = tmp_path / "backbone.pt"
    torch.save(source.backbone.resnet.state_dict(), path)
    loaded = MultitaskCNN(arch="resnet18", weights="file", weights_path=str(path))
    for key, value in source.backbone.resnet.state_dict().items():
        assert torch.equal(loaded.backbone.resnet.state_dict()[key], value), key
    assert loaded.backbone.mean.flatten().tolist() == pytest.approx(IMAGENET_MEAN)


def test_ferplus_file_is_mapped_and_normalised(tmp_path):
    source = MultitaskCNN(arch="resnet50")
    ours = source.backbone.resnet.state_dict()
    key_map = ferplus_key_map(source.backbone.resnet)
    state = {theirs: ours[key] for key, theirs in key_map.items()}
    state["classifier.weight"] = torch.zeros(8, 2048)
    assert "conv2_1_1x1_proj_bn.running_var" in state
    assert "conv5_3_1x1_increase.weight" in state
    path = tmp_path / "ferplus.pt"
    torch.save(state, path)
    loaded = MultitaskCNN(arch="resnet50", weights="ferplus", weights_path=str(path))
    assert torch.equal(loaded.backbone.resnet.layer4[2].conv3.weight, ours["layer4.2.conv3.weight"])
    assert loaded.backbone.mean.flatten().tolist() == pytest.approx(FERPLUS_MEAN)
    assert loaded.backbone.std.flatten().tolist() == [1.0, 1.0, 1.0]


def test_wrong_weights_file_names_file_and_keys(tmp_path):
    path = tmp_path / "resnet18.pt"
    torch.save(MultitaskCNN(arch="resnet18").backbone.resnet.state_dict(), path)
    with pytest.raises(UserError) as error:
        MultitaskCNN(arch="resnet50", weights="file", weights_path=str(path))
    message = str(error.value)
    assert str(path) in message
    assert "layer1.0.conv1.weight: shape (64, 64, 3, 3) in file, (64, 64, 1, 1) expected" in message
    assert "missing layer1.0.conv3.weight" in message
    assert "more)" in message


def test_missing_weights_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match=r"not found: .*nowhere\.pt"):
        MultitaskCNN(arch="resnet18", weights="file", weights_path=str(tmp_path / "nowhere.pt"))


def test_unreadable_weights_file_is_a_user_error(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read backbone weights file"):
        MultitaskCNN(arch="resnet18", weights="file", weights_path=str(path))


def test_unknown_arch_or_weights():
    with pytest.raises(UserError, match=r"model\.arch"):
        MultitaskCNN(arch="vgg16")
    with pytest.raises(UserError, match=r"model\.weights"):
        MultitaskCNN(arch="resnet18", weights="vggface")


RESNET50_BLOCKS = {2: 3, 3: 4, 4: 6, 5: 3}
"""Stage s (conv{s}_*) -> bottleneck blocks of ResNet-50."""


def random_ferplus_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict in the FER+ conversion's key names with random, well-scaled values."""
    generator = torch.Generator().manual_seed(seed)
    template = MultitaskCNN(arch="resnet50").backbone.resnet
    shapes = {key: value.shape for key, value in template.state_dict().items()}
    state = {}
    for ours, theirs in ferplus_key_map(template).items():
        shape = shapes[ours]
        if theirs.endswith("running_var"):
            value = torch.rand(shape, generator=generator) + 0.5
        elif theirs.endswith("running_mean") or theirs.endswith("bias"):
            value = torch.randn(shape, generator=generator) * 0.1
        elif len(shape) == 1:  # BatchNorm scale
            value = torch.rand(shape, generator=generator) * 0.5 + 0.25
        else:  # convolution, He-scaled
            fan_in = shape[1] * shape[2] * shape[3]
            value = torch.randn(shape, generator=generator) * (2 / fan_in) ** 0.5
        state[theirs] = value
    state["classifier.weight"] = torch.zeros(8, 2048)
    return state


def caffe_resnet50(state: dict[str, torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """Reference: METHOD.md's Caffe-layout ResNet-50 on FER+-normalised images (eval BatchNorm,
    eps 1e-5), written from the description: stem pool 3x3/2 without padding in ceil mode, and
    the stride 2 of stages 3-5 in the first block's 1x1_reduce and 1x1_proj."""

    def conv_bn(x, name, stride=1, padding=0):
        x = F.conv2d(x, state[f"{name}.weight"], stride=stride, padding=padding)
        bn = {key: state[f"{name}_bn.{key}"] for key in ("weight", "bias")}
        stats = (state[f"{name}_bn.running_mean"], state[f"{name}_bn.running_var"])
        return F.batch_norm(x, *stats, bn["weight"], bn["bias"], False, 0.0, 1e-5)

    x = images - torch.tensor(FERPLUS_MEAN, dtype=images.dtype).view(1, 3, 1, 1)
    x = F.relu(conv_bn(x, "conv1_7x7_s2", stride=2, padding=3))
    x = F.max_pool2d(x, kernel_size=3, stride=2, padding=0, ceil_mode=True)
    for stage, blocks in RESNET50_BLOCKS.items():
        for block in range(1, blocks + 1):
            name = f"conv{stage}_{block}"
            stride = 2 if stage > 2 and block == 1 else 1
            y = F.relu(conv_bn(x, f"{name}_1x1_reduce", stride=stride))
            y = F.relu(conv_bn(y, f"{name}_3x3", padding=1))
            y = conv_bn(y, f"{name}_1x1_increase")
            shortcut = conv_bn(x, f"{name}_1x1_proj", stride=stride) if block == 1 else x
            x = F.relu(y + shortcut)
    return x.mean(dim=(2, 3))


@pytest.fixture(scope="module")
def ferplus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("ferplus") / "ferplus.pt"
    torch.save(random_ferplus_state(), path)
    return path


def test_ferplus_weights_compute_the_caffe_layout_network(ferplus_file):
    state = {key: value.double() for key, value in torch.load(ferplus_file).items()}
    images = torch.randint(0, 256, (2, 3, 112, 112), generator=torch.Generator().manual_seed(1))
    images = images.double()
    expected = caffe_resnet50(state, images)
    with torch.no_grad():
        ferplus = MultitaskCNN(arch="resnet50", weights="ferplus", weights_path=str(ferplus_file))
        found = ferplus.double().eval().backbone(images)
        torchvision_layout = MultitaskCNN(
            arch="resnet50", weights="ferplus", weights_path=str(ferplus_file), layout="torchvision"
        )
        other = torchvision_layout.double().eval().backbone(images)
    assert ferplus.backbone.layout == "caffe"
    assert expected.shape == (2, 2048) and expected.abs().max() > 0.1
    torch.testing.assert_close(found, expected, atol=1e-5, rtol=0)
    assert (other - expected).abs().max() > 0.1  # same weights, torchvision's computation


def test_stage_checkpoint_keeps_the_ferplus_layout(tmp_path, ferplus_file):
    module = CnnTeacher(
        model={"arch": "resnet50", "weights": "ferplus", "weights_path": str(ferplus_file)},
        optimizer={"lr": 1e-4, "betas": [0.5, 0.999]},
    )
    assert module.hparams.model["layout"] == "caffe"  # recorded, resolved
    old = {**dict(module.hparams), "model": dict(module.hparams.model)}
    del old["model"]["layout"]  # checkpoints that predate the key: derived from the weights
    path = tmp_path / "best.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": old}, path)
    ferplus_file.rename(tmp_path / "moved.pt")  # the loader must not need the FER+ file again
    try:
        loaded = load_cnn(path)
    finally:
        (tmp_path / "moved.pt").rename(ferplus_file)
    images = torch.randint(0, 256, (2, 3, 112, 112), dtype=torch.uint8)
    with torch.no_grad():
        expected = module.eval()(images)
        found = loaded(images)
    assert loaded.backbone.layout == "caffe" and loaded.backbone.resnet.maxpool.ceil_mode
    for key, value in expected.items():
        torch.testing.assert_close(found[key], value, atol=1e-5, rtol=0)


def test_caffe_layout_moves_the_strides_only():
    torchvision_net = MultitaskCNN(arch="resnet50").backbone.resnet
    caffe = MultitaskCNN(arch="resnet50", layout="caffe").backbone.resnet
    assert torchvision_net.maxpool.padding == 1 and caffe.maxpool.padding == 0
    for stage in ("layer2", "layer3", "layer4"):
        first = getattr(caffe, stage)[0]
        assert first.conv1.stride == (2, 2) and first.conv2.stride == (1, 1)
        assert first.downsample[0].stride == (2, 2)
    assert caffe.layer1[0].conv1.stride == (1, 1) == caffe.layer1[0].conv2.stride
    assert list(caffe.state_dict()) == list(torchvision_net.state_dict())
    with pytest.raises(UserError, match="resnet50"):
        MultitaskCNN(arch="resnet18", layout="caffe")
    with pytest.raises(UserError, match=r"model\.layout"):
        MultitaskCNN(arch="resnet50", layout="vgg")


def test_imagenet_download_failure_says_what_to_do(tmp_path, monkeypatch):
    def offline(url, *args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(UserError) as error:
        MultitaskCNN(arch="resnet18", weights="imagenet")
    message = str(error.value)
    assert "\n" not in message
    assert "model.weights=none" in message
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message
