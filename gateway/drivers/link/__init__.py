"""What the serial drivers share, written once.

- ``serial``: ``SerialLink``, a serial port read line by line off the loop.
- ``buses``: grouping the sensors that share one port (SDI-12, Modbus).
- ``drain``: reading and dropping lines until a link has gone quiet.
- ``cadence``: a fixed poll cadence that skips slots already past.
- ``record``: what a probe saw on the wire, as ``Exchange``s.
- ``display``: wire bytes as text a technician can read.
- ``snippet``: the ``[[sensor]]`` TOML table ``gateway scan`` prints.
"""
