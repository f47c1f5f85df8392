"""Stage 3, training: the QAT MS-ResNet (lava-dl) and the SpikingJelly reference, on the fly from I2E events."""
