"""Zoo entries and the recipes that train them, as data. Importing this package registers the entries;
:mod:`robust_mix.train.recipes` registers :data:`TRAINING_RECIPES`."""
from robust_mix.zoo import compose  # noqa: F401
from robust_mix.zoo import paper  # noqa: F401
from robust_mix.zoo import fmnist  # noqa: F401
from robust_mix.zoo.fmnist_recipes import RECIPES as _FMNIST_RECIPES

#: Named training recipes of the zoo: name -> {"recipe", "preset", "set", "help"}.
TRAINING_RECIPES = {**_FMNIST_RECIPES}
