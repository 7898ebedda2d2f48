"""The Modbus register profiles shipped with the gateway: ``*.toml`` data, no code.

The loader and codec are ``gateway.drivers.modbus.profile``; the simulator reads
the same files without importing the gateway (``simulators/modbus.py``,
``_shipped_dir``). A new model is a new file here (docs/modbus-profiles.md).
"""
