"""The test suite: one package per code package (tests.gateway mirrors gateway, ...).

Each folder is a package so that pytest names modules ``tests.gateway.test_x``
and ``import gateway`` always finds the real package, never a test folder.
"""
