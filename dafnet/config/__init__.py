"""Recipes: finding them, schema, YAML loading with ``base:`` and overrides, validation, error rendering."""

from dafnet.config.errors import RecipeError, RecipeIssue
from dafnet.config.recipes import builtin_recipes, find_recipe
from dafnet.config.resolve import load_recipe, resolve
from dafnet.config.schema import ComponentSpec, Recipe

__all__ = ["ComponentSpec", "Recipe", "RecipeError", "RecipeIssue", "builtin_recipes", "find_recipe", "load_recipe",
           "resolve"]
