"""Hardware descriptions (one YAML file per target, every value with its published source).

This folder stays at the repository top level and is installed as the package
``i2e_neuro.hw_configs``; :mod:`i2e_neuro.energy.hw` reads it with ``importlib.resources``.
"""
