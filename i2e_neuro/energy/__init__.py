"""Stage 5, energy: the synaptic-operation energy model and the hardware descriptions it reads."""
