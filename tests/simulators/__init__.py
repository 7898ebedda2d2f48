"""simulators tests."""
