import pytest
import torch
from torch import nn

from byol import ConfigError, backbones


@pytest.mark.parametrize("name,dim", [("resnet18", 512), ("resnet34", 512), ("resnet50", 2048)])
def test_torchvision_resnets_without_classifier(name, dim):
    encoder, feature_dim = backbones.build(name)
    assert feature_dim == dim and isinstance(encoder.fc, nn.Identity)
    assert encoder.conv1.kernel_size == (7, 7) and isinstance(encoder.maxpool, nn.MaxPool2d)
    assert encoder(torch.randn(2, 3, 64, 64)).shape == (2, dim)


def test_small_image_stem_and_grayscale():
    encoder, dim = backbones.build("resnet18", small_images=True, in_channels=1)
    assert encoder.conv1.kernel_size == (3, 3) and encoder.conv1.stride == (1, 1)
    assert encoder.conv1.in_channels == 1 and isinstance(encoder.maxpool, nn.Identity)
    assert encoder(torch.randn(2, 1, 28, 28)).shape == (2, dim)


def test_convnet_is_small_and_fast_shape():
    encoder, dim = backbones.build("convnet", in_channels=3)
    assert dim == 256
    convs = [m for m in encoder.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128, 256]
    assert [c.stride[0] for c in convs] == [1, 2, 2, 2]
    assert encoder(torch.randn(3, 3, 32, 32)).shape == (3, 256)


@pytest.mark.parametrize(
    "name,widths,blocks",
    [("convnet-512", [32, 64, 128, 512], 1), ("convnet-wide", [64, 128, 256, 512], 1),
     ("convnet-deep", [32, 32, 64, 64, 128, 128, 256, 256], 2),
     ("convnet-1024", [32, 64, 128, 1024], 1), ("convnet-2048", [32, 64, 128, 2048], 1)],
)  # fmt: skip
def test_convnet_variants(name, widths, blocks):
    encoder, dim = backbones.build(name, in_channels=1)
    convs = [m for m in encoder.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == widths and dim == widths[-1]
    assert convs[0].in_channels == 1 and len(convs) == 4 * blocks
    # Fully convolutional: 16 px training views and 28 px evaluation images both work.
    assert encoder(torch.randn(2, 1, 16, 16)).shape == encoder(torch.randn(2, 1, 28, 28)).shape


def test_unknown_architecture_names_choices():
    with pytest.raises(ConfigError, match="resnet18"):
        backbones.build("resnet9000")
