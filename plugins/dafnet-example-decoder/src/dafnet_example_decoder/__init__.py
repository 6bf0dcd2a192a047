"""dafnet-example-decoder: a residual FiLM decoder registered as ``residual_film``.

This module imports nothing heavy: dafnet finds the decoder through the entry point in
``pyproject.toml`` and imports :mod:`dafnet_example_decoder.decoder` only when a recipe
uses it.
"""

__version__ = "0.1.0"
