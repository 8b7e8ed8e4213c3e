"""``mix``: any standard backbone with any robust backbone, given at load time."""
from robust_mix.config import ModelConfig
from robust_mix.registry import register_model

register_model(ModelConfig(
    name="mix",
    alpha=0.5,
    description="Compose any pair: load_model('mix', standard='timm/<arch>', "
                "robust='robustbench/<dataset>/<threat>/<Name>', alpha=0.9).",
    paper="Bai et al., Improving the Accuracy-Robustness Trade-off of Classifiers via Adaptive "
          "Smoothing, SIMODS 2024",
))
