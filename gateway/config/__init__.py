"""Gateway configuration: a TOML file read into frozen dataclasses.

Every key is checked: a missing required key, a value of the wrong type or
range, or an unknown key (usually a typo) refuses the start with a
ConfigError that names the file, the key and the problem. Limits are
documented defaults beside each setting, not magic numbers elsewhere.

One module per section: ``core`` (the file, ``[device]``, ``[log]``),
``anchors`` (``[anchor]``), ``qc`` (``[qc]``) and ``sensors``
(``[[sensor]]``, dispatched through the driver table in ``gateway.drivers``).
Each driver's own keys are parsed in its folder
(``gateway/drivers/<family>/config.py``); the EZO and MQTT settings are
re-exported here for convenience.
"""

from gateway.drivers.ezo.config import EZO_BAUD_RATES, EZO_CIRCUITS, EzoSensorConfig
from gateway.drivers.mqtt.config import MqttConfig, MqttSensorConfig

from .anchors import AnchorConfig
from .core import (
    GatewayConfig,
    LogConfig,
    StatusConfig,
    StorageConfig,
    load_config,
    parse_config,
)
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
    "StatusConfig",
    "StorageConfig",
    "load_config",
    "parse_config",
]
