"""Recipes shipped with dafnet (packaged as dafnet.recipes)."""
