"""The ZePT network on nnU-Net's planned U-Net (see docs/architecture.md)."""
from .config import DEFAULT_SWITCHES, default_zept_config, query_class_names
from .zept_network import ZePTNetwork, ZePTOutput, build_zept_network, unwrap_network

__all__ = ["ZePTNetwork", "ZePTOutput", "build_zept_network", "default_zept_config", "query_class_names",
           "unwrap_network", "DEFAULT_SWITCHES"]
