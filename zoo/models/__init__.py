"""The zoo's model classes."""

from ann2snn_zoo.models.m5 import M5
from ann2snn_zoo.models.piczak import Piczak
from ann2snn_zoo.models.resnet import ResNet, ResidualBlock
from ann2snn_zoo.models.study import StudyHJH, StudyM5, StudyPiczak
from ann2snn_zoo.models.vgg import VGG

__all__ = ["M5", "Piczak", "ResNet", "ResidualBlock", "StudyHJH", "StudyM5", "StudyPiczak", "VGG"]
