"""Stage 1, images to events: the I2E conversion, its direction table, image loading, baselines, pictures."""
