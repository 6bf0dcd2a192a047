"""Decoders (s, z) -> image: FiLM (:mod:`.film`) and SPADE (:mod:`.spade`), method.md 1.6."""
