"""Stage 3, models: the topology (``spec``), the deploy record (``deploy``), the QAT model on
lava-dl (``qat``) and the paper's SpikingJelly reference (``reference``); see
docs/ARCHITECTURE.md."""
