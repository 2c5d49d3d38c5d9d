import torch as th
from gymnasium import spaces
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn


class SmallFrameCNN(BaseFeaturesExtractor):
    """
    CNN for small frames such as MinAtar's 10x10 ones, where SB3's ``NatureCNN`` cannot run (its 8x8 stride-4
    first layer needs at least 36x36 pixels): MinAtar's own network body (Young & Tian 2019), one 3x3
    convolution with 16 channels, stride 1, then a dense layer of ``features_dim`` units, each followed by ReLU.

    Use it with ``CnnLstmPolicy`` (or SB3's ``CnnPolicy``): ``policy_kwargs=dict(features_extractor_class=
    SmallFrameCNN)``. Frames are channels-first images (uint8 in [0, 255], scaled to [0, 1] by SB3's
    preprocessing) of at least 3x3 pixels.

    Paper: https://arxiv.org/abs/1903.03176

    :param observation_space: Channels-first image space
    :param features_dim: Number of features (MinAtar: 128)
    :param n_filters: Number of convolution filters (MinAtar: 16)
    :param normalized_image: Whether the frames are already scaled (as SB3's ``NatureCNN``)
    """

    def __init__(
        self, observation_space: spaces.Box, features_dim: int = 128, n_filters: int = 16, normalized_image: bool = False
    ) -> None:
        if not is_image_space(observation_space, check_channels=False, normalized_image=normalized_image):
            raise ValueError(f"SmallFrameCNN needs an image observation space (channels first), got {observation_space}.")
        channels, height, width = observation_space.shape
        if height < 3 or width < 3:
            raise ValueError(f"SmallFrameCNN needs frames of at least 3x3 pixels, got {height}x{width}.")
        super().__init__(observation_space, features_dim)
        self.cnn = nn.Sequential(nn.Conv2d(channels, n_filters, 3), nn.ReLU(), nn.Flatten())
        self.linear = nn.Sequential(nn.Linear(n_filters * (height - 2) * (width - 2), features_dim), nn.ReLU())

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return self.linear(self.cnn(observations))
