"""A ResNet-18 for 32-px images, the way CIFAR papers build it: a 3×3 stride-1 stem and no max-pool (torchvision's
ResNet-18 otherwise; timm's ``resnet18`` has no option for this stem). Laid out as
``stem -> layer1 -> layer2 -> layer3 -> layer4 -> head`` so a study names the parts ``layer1`` … ``layer4``.
"""

from collections import OrderedDict

from torch import nn


def cifar_resnet18(num_classes: int = 10) -> nn.Sequential:
    from torchvision.models import resnet18

    net = resnet18(num_classes=num_classes)
    stem = nn.Sequential(nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False), net.bn1, net.relu)
    head = nn.Sequential(net.avgpool, nn.Flatten(), net.fc)
    return nn.Sequential(OrderedDict(stem=stem, layer1=net.layer1, layer2=net.layer2, layer3=net.layer3,
                                     layer4=net.layer4, head=head))
