"""Data SPECs and the data they name, as train/calibration/test splits.

The embedded demo, image folders, and CIFAR and MNIST in torchvision's on-disk formats.
"""
