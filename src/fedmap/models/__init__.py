"""Model zoo: the four architectures a config can name, and what of each is pruned and sent."""

from fedmap.models.registry import MODEL_NAMES, build_model, prunable_names, transmitted_names

__all__ = ["MODEL_NAMES", "build_model", "prunable_names", "transmitted_names"]
