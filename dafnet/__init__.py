"""dafnet: multimodal, semi-supervised segmentation with disentangled representations.

Importing ``dafnet`` is cheap (no torch); import submodules for the real work.
"""

__version__ = "0.1.0"
