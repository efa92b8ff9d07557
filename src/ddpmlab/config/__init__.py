"""Typed run configuration (``schema``) and what it builds (``build``)."""
from ddpmlab.config.schema import (CONFIG_DIR, Config, DataConfig, ModelConfig, SampleConfig, ScheduleConfig,
                                   TrainConfig, from_dict, load_config, parse_override, validate)
from ddpmlab.config.toml_writer import to_toml

__all__ = ["CONFIG_DIR", "Config", "DataConfig", "ModelConfig", "SampleConfig", "ScheduleConfig", "TrainConfig",
           "from_dict", "load_config", "parse_override", "to_toml", "validate"]
