"""``robust-mix demo``: the README's main job (placeholder until the Fashion-MNIST zoo lands)."""
