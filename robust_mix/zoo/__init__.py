"""Zoo entries and the recipes that train them, as data. Importing this package registers them."""
from robust_mix.zoo import compose  # noqa: F401
from robust_mix.zoo import paper  # noqa: F401
from robust_mix.zoo import fmnist  # noqa: F401
from robust_mix.zoo import fmnist_recipes  # noqa: F401
