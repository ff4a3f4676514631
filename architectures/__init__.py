"""The ZePT network on nnU-Net's planned U-Net (see docs/architecture.md)."""
from .config import DEFAULT_SWITCHES, default_zept_config, query_class_names
from .zept_network import ZePTNetwork, build_zept_network

__all__ = ["ZePTNetwork", "build_zept_network", "default_zept_config", "query_class_names", "DEFAULT_SWITCHES"]
