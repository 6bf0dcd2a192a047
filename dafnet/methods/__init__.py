"""Registered methods (registry kind ``method``): DAFNet and its graph, steps and predictions."""
