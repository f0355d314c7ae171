"""Model sizing (pure): weights, KV cache and overheads per tensor-parallel rank.

Entry points: ``size_model`` (a configured model, from the most trusted source),
``size_from_config_json`` (a bare config.json), ``attention_heads``.
"""

from gpu_sharing.sizing.estimate import attention_heads, size_from_config_json
from gpu_sharing.sizing.resolve import size_model
from gpu_sharing.sizing.types import ModelSize, SizeSource

__all__ = ["attention_heads", "size_from_config_json", "size_model", "ModelSize", "SizeSource"]
