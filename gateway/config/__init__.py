"""Gateway configuration: a TOML file read into frozen dataclasses.

Every key is checked: a missing required key, a value of the wrong type or
range, or an unknown key (usually a typo) refuses the start with a
ConfigError that names the file, the key and the problem. Limits are
documented defaults beside each setting, not magic numbers elsewhere.

One module per section: ``core`` (the file, ``[device]``, ``[log]``),
``anchors`` (``[anchor]``), ``sensors`` (``[[sensor]]`` and the table of
drivers), and one module per driver.
"""

from .anchors import AnchorConfig
from .core import GatewayConfig, LogConfig, load_config, parse_config
from .ezo import EZO_BAUD_RATES, EZO_CIRCUITS, EzoSensorConfig
from .mqtt import MqttConfig, MqttSensorConfig
from .sensors import SensorConfig

__all__ = [
    "EZO_BAUD_RATES",
    "EZO_CIRCUITS",
    "AnchorConfig",
    "EzoSensorConfig",
    "GatewayConfig",
    "LogConfig",
    "MqttConfig",
    "MqttSensorConfig",
    "SensorConfig",
    "load_config",
    "parse_config",
]
