"""Fault harness: a real gateway killed, its broker, ledgers and serial ports taken away, its
clock stepped; each test shows it keeps ingesting, recovers by itself and loses nothing
acknowledged."""
