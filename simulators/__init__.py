"""Software sensors that speak riverseal's real wire protocols over real transports.

- `river`: a seeded, deterministic river model with storms (`RiverModel`, `Storm`,
  `do_saturation`) and probes that drift and foul in it (`Probe`).
- `ezo`: an Atlas Scientific EZO circuit as a pure state machine (`EzoCircuit`).
- `pty_link`: hosts a device on a real pty pair, with unplug/replug (`PtyLink`,
  `EzoPtyDevice`).
- `mqtt_node`: an MQTT sensor node publishing the gateway's JSON contract (`MqttNode`).
- `cli`: the `sensor-sim` console script.

Imports nothing from `gateway` or `ledger_client`, and importing the package
does not load aiomqtt/paho (`MqttNode.run` imports it when called).
"""

from simulators.ezo import EzoCircuit, EzoKind, Faults, Reply
from simulators.mqtt_node import QUANTITIES, MqttNode, Quantity, rfc3339
from simulators.pty_link import EzoPtyDevice, PtyLink, ReplyHandler
from simulators.river import Probe, RiverModel, RiverState, Storm, WaterSource, do_saturation

__all__ = [
    "QUANTITIES",
    "EzoCircuit",
    "EzoKind",
    "EzoPtyDevice",
    "Faults",
    "MqttNode",
    "Probe",
    "PtyLink",
    "Quantity",
    "Reply",
    "ReplyHandler",
    "RiverModel",
    "RiverState",
    "Storm",
    "WaterSource",
    "do_saturation",
    "rfc3339",
]
