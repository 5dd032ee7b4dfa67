"""Esper: living neural networks on drifting data, operated on by Emrakul.

Subpackages follow the dependency direction ``workloads ← policies ← platform ← cli``;
``analysis`` reads only event logs and run directories.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
