"""Real servers the tests run: Mosquitto, anvil, an openssl TSA, nginx."""
