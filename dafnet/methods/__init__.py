"""Registered methods (registry kind ``method``): DAFNet (the package :mod:`dafnet.methods.dafnet`) and
the baselines (``unet``, ``sdnet``, ``copy``, ``register``), with the data streams
(:mod:`.slice_streams`) and the target-Dice evaluation (:mod:`.target_evaluation`) they share."""
