"""Stage 2, data: the dataset registry (:mod:`.registry`, one entry per dataset), image and event
sources, training and evaluation data, CIFAR10-DVS, event files (:mod:`.formats`) and the
conversion to disk with its index (:mod:`.converter`)."""
