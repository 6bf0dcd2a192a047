"""Inference on NIfTI files with an exported model (``dafnet predict``) and dataset checks
(``dafnet data check``). Both read files through the nnunet source's own preprocessing."""
