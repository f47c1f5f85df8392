"""Stage 2, data: image and event sources, training and evaluation data, CIFAR10-DVS, event files."""
