"""
Scenario scripts for third-party NSQ clients, each run as its own process by
C{tests/integration/test_interop_clients.py}; never imported by the tests.
"""
