"""Recipes: schema, YAML loading with ``base:`` and overrides, validation, error rendering."""

from dafnet.config.errors import RecipeError, RecipeIssue
from dafnet.config.resolve import load_recipe, resolve
from dafnet.config.schema import ComponentSpec, Recipe

__all__ = ["ComponentSpec", "Recipe", "RecipeError", "RecipeIssue", "load_recipe", "resolve"]
