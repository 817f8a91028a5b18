"""The multitask CNN: output shapes, head features, weights files and their errors."""

import pytest
import torch

from abaw_lightning.errors import UserError
from abaw_lightning.models import MultitaskCNN
from abaw_lightning.models.weights import FERPLUS_MEAN, IMAGENET_MEAN, ferplus_key_map


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
    kinds = [type(layer).__name__ for layer in [*head.embed, *head.classify]]
    assert kinds == ["BatchNorm1d", "Linear", "ReLU", "BatchNorm1d", "Dropout", "Linear"]
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
