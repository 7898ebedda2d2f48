"""The Modbus register profiles shipped with the gateway: ``*.toml`` data, no code.

The loader and codec are ``gateway.drivers.modbus.profile``. The files stay
in this folder because the simulators find them here without importing the
gateway (``simulators/modbus.py``, ``_shipped_dir``); they move to
``gateway/drivers/modbus/`` once the simulator looks there.
"""
