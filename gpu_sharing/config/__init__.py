"""Versioned, strict configuration: the daemon config and the seed sizing catalog."""

from gpu_sharing.config.loader import load_config, load_sizing_catalog, parse_config_text
from gpu_sharing.config.schema import Config, ModelSettings
from gpu_sharing.config.sizing_catalog import SizingCatalog, SizingEntry

__all__ = ["load_config", "load_sizing_catalog", "parse_config_text", "Config", "ModelSettings", "SizingCatalog", "SizingEntry"]
