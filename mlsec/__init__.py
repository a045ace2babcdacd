"""mlsec: find hostile ML artifacts without ever loading them.

The public surface is deliberately small: the version, and the pipeline entry point
``mlsec.pipeline.run``. Everything else is an implementation detail that may move.
"""

__version__ = "0.1.0"
