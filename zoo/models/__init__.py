"""The zoo's model classes."""

from zoo.models.m5 import M5
from zoo.models.piczak import Piczak
from zoo.models.resnet import ResNet, ResidualBlock
from zoo.models.study import StudyHJH, StudyM5, StudyPiczak
from zoo.models.vgg import VGG

__all__ = ["M5", "Piczak", "ResNet", "ResidualBlock", "StudyHJH", "StudyM5", "StudyPiczak", "VGG"]
