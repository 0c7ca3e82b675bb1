"""Networks: CLRB/CLRA blocks, the five fusions, the DTS network, presets, and reference-checkpoint loading."""

from csakd.models.blocks import CLRA, CLRB, Stream
from csakd.models.complexity import count_config_params, count_macs, count_params
from csakd.models.config import ModelConfig
from csakd.models.dts import DTSNet
from csakd.models.presets import create_model, list_models, preset_config
from csakd.models.reference import infer_reference_config, load_reference_model

__all__ = [
    "CLRA",
    "CLRB",
    "DTSNet",
    "ModelConfig",
    "Stream",
    "count_config_params",
    "count_macs",
    "count_params",
    "create_model",
    "infer_reference_config",
    "list_models",
    "load_reference_model",
    "preset_config",
]
