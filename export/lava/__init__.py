"""The Lava side of the export: the only package that imports Lava (``lava.magma``, ``lava.proc``,
``lava.utils``).

``graph`` builds stock Lava processes in Loihi 2's formats from a network description;
``processes`` holds our host-side processes (I2E source, readout counter, spike monitors) and
the host <-> chip adapters; ``synapse``, ``conv_plan``, ``conv``, ``lif`` and ``ports`` are the
fast bit-exact CPU models of the stock ``Conv`` / ``LIF`` / ``LIFReset``; ``run_config`` builds
every run configuration; ``inprocess_runtime`` and ``supervision`` run graphs without hangs or
leftovers; ``runner`` simulates samples; ``legality`` checks a built graph against Loihi 2's
register formats (the rules themselves are in :mod:`export.rules`, without Lava).
"""
