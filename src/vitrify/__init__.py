"""vitrify: automated cryo-EM single-particle analysis, RELION-4 compatible.

Importing vitrify has no side effects: it creates no file, reads no configuration and
imports no heavy dependency.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
