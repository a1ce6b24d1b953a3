"""A small CNN guide for images of any size (three strided conv stages, then a global average pool and a linear
classifier): quick to train on a CPU, a starting point to replace with your own network."""

from collections import OrderedDict

from torch import nn


def small_cnn(num_classes: int = 10, channels: int = 3, width: int = 32) -> nn.Sequential:
    def stage(i: int, o: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(i, o, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(),
                             nn.Conv2d(o, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU())

    return nn.Sequential(OrderedDict(stage1=stage(channels, width), stage2=stage(width, 2 * width),
                                     stage3=stage(2 * width, 4 * width),
                                     head=nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                                        nn.Linear(4 * width, num_classes))))
