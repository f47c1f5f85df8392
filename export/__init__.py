"""Export side: the network description and its consumers (HDF5, Lava graph, resources, SynOps).

``export.from_checkpoint(path)`` builds the description of a trained checkpoint; importing this
package does not import Lava (only ``lava_graph``, ``processes``, ``runner`` and
``fast_models`` do).
"""

from export.description import NetworkDescription, from_checkpoint, from_deploy

__all__ = ["NetworkDescription", "from_checkpoint", "from_deploy"]
