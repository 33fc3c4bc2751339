"""
Tests for L{twisted_nsq.nsqadmin.service}: an L{NSQAdminService} starting and draining with a
real listener on 127.0.0.1, in front of a real nsqlookupd service.
"""

from __future__ import annotations

from typing import Any

import treq
from twisted.internet.defer import ensureDeferred
from twisted.internet.error import ConnectionRefusedError
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import BrowserLikePolicyForHTTPS

from tests._daemons import capture_messages, port_number, trial_reactor
from tests.nsqadmin.test_api import stand_in_pages
from twisted_nsq._listen import StartupError
from twisted_nsq.nsqadmin.options import NSQAdminOptions
from twisted_nsq.nsqadmin.service import NSQAdminService, client_tls_policy
from twisted_nsq.nsqlookupd.options import NSQLookupdOptions
from twisted_nsq.nsqlookupd.service import NSQLookupdService

TIMEOUT = 10.0


class NSQAdminServiceTests(TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.reactor = trial_reactor()
        self.messages = capture_messages(self)

    def lookupd(self) -> str:
        service = NSQLookupdService(
            NSQLookupdOptions(
                tcp_address="127.0.0.1:0", http_address="127.0.0.1:0", broadcast_address="127.0.0.1"
            ),
            self.reactor,
        )
        service.startService()
        self.addCleanup(service.stopService)
        return f"127.0.0.1:{port_number(service.http_listening_port)}"

    def make_service(self, **settings: Any) -> NSQAdminService:
        values: dict[str, Any] = {"http_address": "127.0.0.1:0", "lookupd_http_addresses": [self.lookupd()]}
        values.update(settings)
        # Only nsqadmin's own lines matter here.
        self.messages.clear()
        service = NSQAdminService(NSQAdminOptions(**values), self.reactor, pages=stand_in_pages)
        self.addCleanup(service.stopService)
        return service

    def port_of(self, service: NSQAdminService) -> int:
        return port_number(service.http_listening_port)

    async def test_start_and_stop(self) -> None:
        """Start logs the version and the listening line; the API reaches lookupd; stop closes all."""
        service = self.make_service()
        service.startService()
        port = self.port_of(service)
        self.assertTrue(self.messages[0].startswith("nsqadmin v1.3.0-twisted (built w/python3."))
        self.assertIn(f"HTTP: listening on 127.0.0.1:{port}", self.messages)
        response = await treq.get(f"http://127.0.0.1:{port}/api/topics", persistent=False).addTimeout(
            TIMEOUT, self.reactor
        )
        self.assertEqual(await treq.json_content(response), {"topics": [], "message": ""})
        response = await treq.get(f"http://127.0.0.1:{port}/ping", persistent=False).addTimeout(
            TIMEOUT, self.reactor
        )
        self.assertEqual(await treq.content(response), b"OK")
        self.assertTrue(any(m.startswith("200 GET /ping (127.0.0.1:") for m in self.messages), self.messages)
        await service.stopService()
        self.assertFalse(service.running)
        self.assertIsNone(service.http_listening_port)
        self.assertIsNone(service.pool)
        self.assertIn(f"HTTP: closing 127.0.0.1:{port}", self.messages)
        await self.assertFailure(
            ensureDeferred(
                treq.get(f"http://127.0.0.1:{port}/ping", persistent=False).addTimeout(TIMEOUT, self.reactor)
            ),
            ConnectionRefusedError,
        )

    async def test_config_body_limit(self) -> None:
        """A PUT /config body over 1 MiB is refused with 413 before it is read."""
        service = self.make_service()
        service.startService()
        port = self.port_of(service)
        response = await treq.put(
            f"http://127.0.0.1:{port}/config/log_level", data=b"x" * (1024 * 1024 + 1), persistent=False
        ).addTimeout(TIMEOUT, self.reactor)
        self.assertEqual(response.code, 413)
        self.assertEqual(await treq.json_content(response), {"message": "INVALID_VALUE"})

    def test_invalid_options(self) -> None:
        """Invalid options fail start-up with Go's message, binding nothing."""
        for settings, message in (
            ({"lookupd_http_addresses": []}, "--nsqd-http-address or --lookupd-http-address required"),
            ({"http_address": "127.0.0.1:http"}, "invalid port 'http'"),
            ({"http_client_tls_cert": "c.pem"}, "--http-client-tls-key must be specified"),
            (
                {"http_client_tls_cert": "/nonexistent/c.pem", "http_client_tls_key": "/nonexistent/k.pem"},
                "failed to LoadX509KeyPair /nonexistent/c.pem, /nonexistent/k.pem - ",
            ),
            ({"http_client_tls_root_ca_file": "/nonexistent/ca.pem"}, "failed to read TLS root CA file"),
        ):
            service = self.make_service(**settings)
            with self.assertRaises(StartupError) as caught:
                service.startService()
            self.assertIn(message, str(caught.exception))
            self.assertFalse(service.running)
            self.assertIsNone(service.http_listening_port)
        self.assertFalse([m for m in self.messages if "listening on" in m])

    async def test_busy_port(self) -> None:
        first = self.make_service()
        first.startService()
        port = self.port_of(first)
        second = self.make_service(http_address=f"127.0.0.1:{port}")
        with self.assertRaises(StartupError) as caught:
            second.startService()
        self.assertTrue(str(caught.exception).startswith(f"listen (127.0.0.1:{port}) failed - "))
        self.assertIsNone(second.pool)
        await first.stopService()

    def test_stop_when_not_started(self) -> None:
        self.successResultOf(self.make_service().stopService())


class TLSPolicyTests(SynchronousTestCase):
    def test_default(self) -> None:
        self.assertIsInstance(client_tls_policy(NSQAdminOptions()), BrowserLikePolicyForHTTPS)

    def test_insecure(self) -> None:
        """Skipping verification still makes a connection creator for any host."""
        policy = client_tls_policy(NSQAdminOptions(http_client_tls_insecure_skip_verify=True))
        self.assertIsNotNone(policy.creatorForNetloc(b"example.com", 443))

    def test_bad_ca(self) -> None:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"not a certificate")
        with self.assertRaises(StartupError) as caught:
            client_tls_policy(NSQAdminOptions(http_client_tls_root_ca_file=path))
        self.assertEqual(str(caught.exception), f"failed to AppendCertsFromPEM {path}")
