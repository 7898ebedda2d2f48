"""Software sensors that speak riverseal's real wire protocols over real transports.

- `river`: a seeded, deterministic river model with storms (`RiverModel`, `Storm`,
  `do_saturation`) and probes that drift and foul in it (`Probe`).
- `pty_device`: the base of every serial simulator: a real pty pair with its
  symlink, reader, writer and unplug/replug (`PtyLink`), and the async context
  manager each protocol's device subclasses (`PtyDevice`, answering in `Reply` lines).
- `ezo`: an Atlas Scientific EZO circuit as a pure state machine (`EzoCircuit`);
  `ezo_pty`: one on a pty (`EzoPtyDevice`).
- `sdi12`: a USB SDI-12 adapter with SDI-12 sondes behind it, pure (`Sdi12Adapter`,
  `Sonde`) and on a pty (`Sdi12PtyAdapter`).
- `modbus`: Modbus RTU probes by register profile, several slaves on one pty bus
  (`ModbusSimBus`, `SimSlave`, `ModbusFaults`).
- `mqtt_node`: an MQTT sensor node publishing JSON or SenML, with faults (`MqttNode`,
  `NodeFaults`).
- `cli`: the `sensor-sim` console script.

Imports nothing from `gateway` or `ledger_client`, and importing the package
does not load aiomqtt/paho (`MqttNode.run` imports it when called).
"""

from simulators.ezo import EzoCircuit, EzoKind, Faults
from simulators.ezo_pty import EzoPtyDevice
from simulators.modbus import (
    ModbusFaults,
    ModbusSimBus,
    SimProfile,
    SimSlave,
    SimValue,
    encode_words,
    load_sim_profile,
    river_value,
)
from simulators.mqtt_node import QUANTITIES, MqttNode, NodeFaults, Quantity, rfc3339
from simulators.pty_device import PtyDevice, PtyLink, Reply, ReplyHandler
from simulators.river import Probe, RiverModel, RiverState, Storm, WaterSource, do_saturation
from simulators.sdi12 import (
    SDI12_QUANTITIES,
    SONDE_MODELS,
    Sdi12Adapter,
    Sdi12PtyAdapter,
    Sonde,
    SondeFaults,
    SondeModel,
    parse_sonde_spec,
    sdi12_crc,
)

__all__ = [
    "QUANTITIES",
    "SDI12_QUANTITIES",
    "SONDE_MODELS",
    "EzoCircuit",
    "EzoKind",
    "EzoPtyDevice",
    "Faults",
    "ModbusFaults",
    "ModbusSimBus",
    "MqttNode",
    "NodeFaults",
    "Probe",
    "PtyDevice",
    "PtyLink",
    "Quantity",
    "Reply",
    "ReplyHandler",
    "RiverModel",
    "RiverState",
    "Sdi12Adapter",
    "Sdi12PtyAdapter",
    "SimProfile",
    "SimSlave",
    "SimValue",
    "Sonde",
    "SondeFaults",
    "SondeModel",
    "Storm",
    "WaterSource",
    "do_saturation",
    "encode_words",
    "load_sim_profile",
    "parse_sonde_spec",
    "rfc3339",
    "river_value",
    "sdi12_crc",
]
