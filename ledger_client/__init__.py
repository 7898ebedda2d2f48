"""riverseal's verifier library: Merkle log maths, signed notes, records, bundles.

Pure and synchronous: it reads bytes and returns values or raises a
``LedgerClientError``. Nothing here imports the gateway, serial or MQTT code.
"""
