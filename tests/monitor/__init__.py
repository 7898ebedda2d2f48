"""Tests of riverseal_monitor: the witness service over real HTTP and its CLI."""
