"""Software sensors that speak riverseal's real wire protocols (imports nothing from gateway)."""

from simulators.ezo import EzoCircuit, EzoKind, Faults, Reply
from simulators.river import RiverModel, RiverState, do_saturation

__all__ = ["EzoCircuit", "EzoKind", "Faults", "Reply", "RiverModel", "RiverState", "do_saturation"]
