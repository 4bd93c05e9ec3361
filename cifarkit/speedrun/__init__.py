"""The speedrun: airbench's ideas as named, switchable pieces (``recipe``) and the course baseline it races
(``course``). Everything here stands on the core; nothing in the core imports it."""

from cifarkit.speedrun.recipe import PIECES, Recipe, evaluate_with_tta, get_recipe, run_speedrun, train

__all__ = ["PIECES", "Recipe", "evaluate_with_tta", "get_recipe", "run_speedrun", "train"]
