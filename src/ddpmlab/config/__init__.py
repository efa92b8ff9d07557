"""Typed run configuration (``schema``) and what it builds (``build``)."""
from ddpmlab.config.schema import (CONFIG_DIR, Config, DataConfig, ModelConfig, SampleConfig, ScheduleConfig,
                                   TrainConfig, from_dict, load_config, parse_override, to_toml, validate)

__all__ = ["CONFIG_DIR", "Config", "DataConfig", "ModelConfig", "SampleConfig", "ScheduleConfig", "TrainConfig",
           "from_dict", "load_config", "parse_override", "to_toml", "validate"]
