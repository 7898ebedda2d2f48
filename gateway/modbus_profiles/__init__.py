"""Register profiles for Modbus RTU sensors: the loader and codec, and the shipped ``*.toml`` files.

A shipped profile is named by its file stem in a sensor's config
(``profile = "ysi-odo-rtu"``); a technician's own model is a file path
(``profile = "/etc/riverseal/profiles/acme-ph1.toml"``). See
``docs/modbus-profiles.md``.
"""

from gateway.modbus_profiles.profile import (
    DATA_TYPES,
    CodecError,
    DecodedReading,
    Identify,
    Profile,
    ReadBlock,
    ReadLimits,
    SerialDefaults,
    SetupWrite,
    ValueSpec,
    decode_reading,
    decode_value,
    encode_value,
    load_profile,
    parse_profile,
    plan_reads,
    shipped_profiles,
)

__all__ = [
    "DATA_TYPES",
    "CodecError",
    "DecodedReading",
    "Identify",
    "Profile",
    "ReadBlock",
    "ReadLimits",
    "SerialDefaults",
    "SetupWrite",
    "ValueSpec",
    "decode_reading",
    "decode_value",
    "encode_value",
    "load_profile",
    "parse_profile",
    "plan_reads",
    "shipped_profiles",
]
