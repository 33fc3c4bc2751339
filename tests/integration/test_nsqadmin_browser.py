"""
nsqadmin in a real headless Chromium, against a real cluster.

Every test runs one C{nsqlookupd}, two C{nsqd} registered with it and one C{nsqadmin} reading
through that lookupd, all as subprocesses, and drives Chromium (L{tests.integration._browser})
over nsqadmin's pages: the content of every page, the admin actions (each behind a
C{window.confirm}) checked against the daemons' own HTTP APIs, auto-refresh without navigation,
live charts, and HTML a consumer smuggles in through IDENTIFY shown as text and never run. A
last test reads every page with no browser at all: each is complete HTML without JavaScript.

Selenium is blocking, so the tests are synchronous. Trial never calls C{setUpClass}, so each test
starts its own cluster and browser (about two seconds in all). Pages refresh themselves every half
second (C{?refresh=0.5}, a page option) so that nothing waits for the 5 s default. Every page is
saved as a screenshot (L{tests.integration._browser.screenshot_dir}). Any error in the browser's
console (a script error, a failed request) fails the test.
"""

from __future__ import annotations

import functools
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from twisted.trial.unittest import SynchronousTestCase

from tests.integration._browser import Browser, check_installed, start_browser
from tests.integration._daemon import NSQDProcess
from tests.integration._nsqadmin import start_admin_cluster
from tests.integration._rawclient import RawClient
from tests.integration._wait import wait_until

#: How long a daemon may take to register something with nsqlookupd, or a page to show a change.
SETTLE_TIMEOUT = 10.0
#: How long one HTTP call may take.
HTTP_TIMEOUT = 10.0
#: The refresh period the tests ask pages for (seconds).
REFRESH = "0.5"

#: What a consumer sends as its IDENTIFY C{client_id}, C{hostname} and C{user_agent}: markup that
#: runs script if a page ever inserts it as HTML. Each sets C{window.__xss}.
XSS_CLIENT_ID = "<img src=x onerror=window.__xss=1>"
XSS_USER_AGENT = "<script>window.__xss=2</script>"
XSS_HOSTNAME = "<svg onload=window.__xss=3>"

#: Columns of the per-node tables of the topic and channel pages (and of the node page's table).
DEPTH, IN_FLIGHT, MESSAGES = 1, 3, 7
#: Columns of the topics page.
TOPICS_MESSAGES, TOPICS_CHANNELS = 3, 4
#: Columns of the channel page's clients table.
CLIENT_IN_FLIGHT, CLIENT_FINISHED, CLIENT_MESSAGES = 4, 6, 8
#: Columns of the nodes page.
NODES_TCP_PORT, NODES_HTTP_PORT, NODES_VERSION, NODES_TOPICS = 2, 3, 4, 6

#: JavaScript: for each C{svg.chart}, the number of data points it says it holds and the number of
#: vertices its line actually draws.
CHART_POINTS = """
return Array.from(document.querySelectorAll('svg.chart')).map(function (svg) {
  var line = svg.querySelector('polyline');
  var drawn = line ? (line.getAttribute('points') || '').trim().split(/\\s+/).filter(Boolean).length : 0;
  return [parseInt(svg.getAttribute('data-points') || '0', 10), drawn];
});
"""


# -- the daemons' HTTP APIs ---------------------------------------------------------------------


def http_request(method: str, url: str, body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    """One HTTP call; its status, headers and body (errors included)."""
    request = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
            return response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, dict(e.headers.items()), e.read()


def http_ok(method: str, url: str, body: bytes | None = None) -> bytes:
    """An HTTP call that must answer 200; its body."""
    status, _, answer = http_request(method, url, body)
    if status != 200:
        raise AssertionError(f"{method} {url} answered {status}: {answer!r}")
    return answer


def http_json(url: str) -> Any:
    """GET C{url} and decode its JSON."""
    return json.loads(http_ok("GET", url))


# -- the tests ----------------------------------------------------------------------------------


class NSQAdminBrowserTests(SynchronousTestCase):
    """nsqadmin's pages in Chromium over a lookupd, two nsqd and one nsqadmin."""

    def setUp(self) -> None:
        check_installed()
        cluster = start_admin_cluster(self)
        self.lookupd, self.nodes, self.base = cluster.lookupd, cluster.nodes, cluster.base
        wait_until(
            "nsqlookupd lists both nsqd",
            lambda: len(http_json(f"http://{self.lookupd.http_hostport}/nodes")["producers"]),
            lambda count: count == 2,
            SETTLE_TIMEOUT,
        )
        self.browser = start_browser(self)
        # Runs before the browser quits (cleanups run last-in first-out).
        self.addCleanup(self.assert_no_script_errors)

    # -- helpers ---------------------------------------------------------------------------------

    def node_name(self, node: NSQDProcess) -> str:
        """The node as nsqadmin names it: C{broadcast_address:http_port}."""
        return f"127.0.0.1:{node.http_address[1]}"

    def url(self, path: str, refresh: str | None = REFRESH) -> str:
        """nsqadmin's URL of C{path} (refreshing every C{refresh} seconds)."""
        query = "?" + urllib.parse.urlencode({"refresh": refresh}) if refresh is not None else ""
        return self.base + path + query

    def open(self, path: str, refresh: str | None = REFRESH) -> Browser:
        """Open one of nsqadmin's pages in the browser and wait for its content."""
        self.browser.get(self.url(path, refresh))
        self.browser.wait_element("main#content")
        return self.browser

    def publish(self, node: NSQDProcess, topic: str, count: int, prefix: str = "m") -> None:
        """Publish C{count} messages to C{topic} on C{node} through its HTTP C{/mpub}."""
        body = "\n".join(f"{prefix}-{i}" for i in range(count)).encode()
        http_ok("POST", f"http://{node.http_hostport}/mpub?topic={urllib.parse.quote(topic)}", body)

    def create_channel(self, node: NSQDProcess, topic: str, channel: str, ordered: bool = False) -> None:
        """Create C{topic} and C{channel} on C{node} (an ordered channel: a twisted-nsq extension)."""
        query = urllib.parse.urlencode({"topic": topic})
        http_ok("POST", f"http://{node.http_hostport}/topic/create?{query}")
        fields = {"topic": topic, "channel": channel}
        if ordered:
            fields["ordered"] = "true"
        query = urllib.parse.urlencode(fields)
        http_ok("POST", f"http://{node.http_hostport}/channel/create?{query}")

    def topic_stats(self, node: NSQDProcess, topic: str) -> dict[str, Any] | None:
        """C{topic}'s entry of C{node}'s C{/stats}, or None when the node has no such topic."""
        query = urllib.parse.urlencode({"format": "json", "topic": topic})
        stats = http_json(f"http://{node.http_hostport}/stats?{query}")
        for entry in stats.get("topics") or []:
            if entry["topic_name"] == topic:
                found: dict[str, Any] = entry
                return found
        return None

    def channel_stats(self, node: NSQDProcess, topic: str, channel: str) -> dict[str, Any] | None:
        """C{channel}'s entry of C{node}'s C{/stats}, or None."""
        entry = self.topic_stats(node, topic)
        for candidate in (entry or {}).get("channels") or []:
            if candidate["channel_name"] == channel:
                found: dict[str, Any] = candidate
                return found
        return None

    def channel_field(self, node: NSQDProcess, topic: str, channel: str, key: str) -> Any:
        """One field of C{channel}'s entry in C{node}'s C{/stats} (None when there is no channel)."""
        return (self.channel_stats(node, topic, channel) or {}).get(key)

    def wait_registered(self, topic: str, producers: int, channels: list[str] | None = None) -> None:
        """Wait until lookupd lists C{producers} producers (and these channels) for C{topic}."""
        query = urllib.parse.urlencode({"topic": topic})

        def lookup() -> tuple[int, list[str]]:
            status, _, body = http_request("GET", f"http://{self.lookupd.http_hostport}/lookup?{query}")
            if status != 200:
                return -1, []
            answer = json.loads(body)
            return len(answer["producers"]), sorted(answer["channels"])

        wait_until(
            f"lookupd lists {producers} producer(s) of {topic}",
            lookup,
            lambda seen: seen[0] == producers and (channels is None or seen[1] == sorted(channels)),
            SETTLE_TIMEOUT,
        )

    def connect_consumer(self, topic: str, channel: str) -> RawClient:
        """
        A consumer on the first nsqd whose IDENTIFY carries markup; it finishes one message and
        holds the next in flight.
        """
        client = RawClient(self.nodes[0].tcp_address)
        self.addCleanup(client.close)
        client.identify(
            {
                "client_id": XSS_CLIENT_ID,
                "hostname": XSS_HOSTNAME,
                "user_agent": XSS_USER_AGENT,
                "feature_negotiation": True,
                "heartbeat_interval": 60000,
            }
        )
        self.assertEqual(client.sub(topic, channel).data, b"OK")
        client.rdy(1)
        client.fin(client.read_message().id)
        client.read_message()
        return client

    def marked_page(self) -> None:
        """Mark the page's window, so that a later check can tell it was never reloaded."""
        self.browser.script("window.__noReload = 'same page';")

    def assert_not_reloaded(self) -> None:
        """The page marked by L{marked_page} is still the one shown (no navigation happened)."""
        self.assertEqual(self.browser.script("return window.__noReload;"), "same page")
        self.assertEqual(self.browser.script("return performance.getEntriesByType('navigation').length;"), 1)

    def rows(self, css: str) -> list[dict[str, Any]]:
        """
        Every element matching C{css}, read at once (a refresh may swap the page meanwhile): its
        C{data-*} attributes, its visible C{text}, and its C{cells}' texts (for table rows).
        """
        found: list[dict[str, Any]] = self.browser.script(
            "return Array.from(document.querySelectorAll(arguments[0])).map(function (e) {"
            "  var row = Object.assign({}, e.dataset);"
            "  row.text = e.innerText;"
            "  row.cells = Array.from(e.cells || []).map(function (c) { return c.innerText.trim(); });"
            "  return row; });",
            css,
        )
        return found

    def column(self, css: str, index: int) -> dict[str, int]:
        """The number in column C{index} of each row matching C{css}, by the row's C{data-node}."""
        return {row["node"]: self.number(row["cells"][index]) for row in self.rows(css)}

    def click_action(self, css: str) -> str:
        """Click the action button C{css}, accept its confirm, and return the question asked."""
        self.browser.click(css)
        return self.browser.accept_confirm()

    def wait_flash(self, text: str, kind: str = "ok") -> None:
        """Wait until the flash area shows a message of C{kind} (ok, warning, error) holding C{text}."""
        self.browser.wait_for(
            f"#flash shows a {kind} message with {text!r}",
            lambda d: any(text in row["text"] for row in self.rows(f"#flash .flash-item.{kind}")),
        )

    def assert_no_script_errors(self) -> None:
        """The pages logged no error to the browser console (no script error, no failed request)."""
        self.assertEqual(self.browser.console_errors(), [], "errors in the browser console")

    def assert_no_xss(self) -> None:
        """None of the consumer's markup ran as script on the pages shown so far."""
        self.assertIsNone(self.browser.script("return window.__xss;"), "markup from IDENTIFY ran as script")

    def number(self, text: str) -> int:
        """The integer a cell shows (thousands separators allowed)."""
        digits = text.replace(",", "").strip()
        self.assertRegex(digits, r"^\d+$")
        return int(digits)

    def wait_for_chart_points(self) -> None:
        """Wait until every chart of the page (rate, depth, in-flight) has drawn two or more points."""
        self.browser.wait_element("section#charts:not([hidden]) svg.chart[data-metric='depth']")
        metrics = sorted(
            self.browser.script(
                "return Array.from(document.querySelectorAll('svg.chart')).map(function (e) {"
                "  return e.getAttribute('data-metric'); });"
            )
        )
        self.assertEqual(metrics, ["depth", "in_flight", "rate"])

        def drawn(driver: WebDriver) -> bool:
            counts: list[list[int]] = driver.execute_script(CHART_POINTS)
            return len(counts) == 3 and all(held >= 2 and line == held for held, line in counts)

        self.browser.wait_for("every chart draws at least two points", drawn)

    # -- tests -------------------------------------------------------------------------------------

    def test_every_page(self) -> None:
        """
        Every page shows the cluster: the topics, each node's rows, the channel's consumer (its
        IDENTIFY markup as literal text, never run), the nodes, one node's topics and clients, a
        live counter that grows with publishing, the lookup page's inactive topic, and live charts
        that draw points as the page refreshes.
        """
        first, second = self.nodes
        n1, n2 = (self.node_name(n) for n in self.nodes)
        for node in self.nodes:
            self.create_channel(node, "orders", "audit")
            self.create_channel(node, "payments", "ledger", ordered=True)
        self.publish(first, "orders", 3)
        self.publish(second, "orders", 5)
        self.publish(first, "payments", 2)
        self.publish(second, "payments", 4)
        http_ok("POST", f"http://{self.lookupd.http_hostport}/topic/create?topic=dormant")
        self.wait_registered("orders", 2, ["audit"])
        self.wait_registered("payments", 2, ["ledger"])
        self.connect_consumer("orders", "audit")

        # The topics list, at / and at /topics; "dormant" is listed by lookupd with no producer.
        for path, shot in (("/", "01-index"), ("/topics", "02-topics")):
            browser = self.open(path)
            topics = {row["topic"]: row["cells"] for row in self.rows("#topics-table tr[data-topic]")}
            self.assertEqual(sorted(topics), ["dormant", "orders", "payments"])
            self.assertEqual(self.number(topics["orders"][TOPICS_MESSAGES]), 8)
            self.assertEqual(self.number(topics["payments"][TOPICS_MESSAGES]), 6)
            self.assertEqual(self.number(topics["orders"][TOPICS_CHANNELS]), 1)
            self.assertEqual(self.number(topics["payments"][TOPICS_CHANNELS]), 1)
            browser.save_screenshot(shot)

        # One topic: a row per node with its own counts, and the channel.
        browser = self.open("/topics/orders")
        self.assertEqual(self.column("#topic-nodes-table tr[data-node]", MESSAGES), {n1: 3, n2: 5})
        self.assertEqual([row["channel"] for row in self.rows("#channels-table tr[data-channel]")], ["audit"])
        self.assertEqual(browser.find_all(".label-paused"), [])
        self.wait_for_chart_points()
        browser.save_screenshot("03-topic")

        # One channel: a row per node, and the consumer with its IDENTIFY fields as text.
        browser = self.open("/topics/orders/audit")
        nodes_table = "#channel-nodes-table tr[data-node]"
        self.assertEqual(self.column(nodes_table, DEPTH), {n1: 1, n2: 5})
        self.assertEqual(self.column(nodes_table, IN_FLIGHT), {n1: 1, n2: 0})
        self.assertEqual(self.column(nodes_table, MESSAGES), {n1: 3, n2: 5})
        clients = self.rows("#clients-table tr[data-node]")
        self.assertEqual(len(clients), 1, clients)
        client = clients[0]
        self.assertEqual(client["node"], n1)
        for markup in (XSS_HOSTNAME, XSS_CLIENT_ID, XSS_USER_AGENT):
            self.assertIn(markup, client["text"])
        self.assertEqual(browser.js_text("#clients-table .user-agent"), XSS_USER_AGENT)
        self.assertEqual(browser.js_text("#clients-table .client-id"), XSS_CLIENT_ID)
        self.assertEqual(browser.js_text("#clients-table .client-host"), XSS_HOSTNAME)
        self.assertEqual(
            [self.number(client["cells"][i]) for i in (CLIENT_IN_FLIGHT, CLIENT_FINISHED, CLIENT_MESSAGES)],
            [1, 1, 2],
        )
        self.assertEqual(browser.find_all("#content img, #content script, #content svg:not(.chart)"), [])
        self.wait_for_chart_points()
        self.assert_no_xss()
        browser.save_screenshot("04-channel")

        # The nodes.
        browser = self.open("/nodes")
        nodes = {row["node"]: row["cells"] for row in self.rows("#nodes-table tr[data-node]")}
        self.assertEqual(sorted(nodes), sorted([n1, n2]))
        for node in self.nodes:
            cells = nodes[self.node_name(node)]
            self.assertEqual(cells[NODES_TCP_PORT], str(node.tcp_address[1]))
            self.assertEqual(cells[NODES_HTTP_PORT], str(node.http_address[1]))
            self.assertEqual(cells[NODES_VERSION], "1.3.0")
            self.assertEqual(self.number(cells[NODES_TOPICS]), 2)
        browser.save_screenshot("05-nodes")

        # One node: its topics and channels, and the consumer as text.
        browser = self.open(f"/nodes/{n1}")
        topic_rows = self.rows("#node-topics-table tr[data-topic]:not([data-channel])")
        self.assertEqual({row["topic"] for row in topic_rows}, {"orders", "payments"})
        channel_rows = self.rows("#node-topics-table tr[data-channel]")
        self.assertEqual(
            [(row["topic"], row["channel"]) for row in channel_rows],
            [("orders", "audit"), ("payments", "ledger")],
        )
        # The ordered channel (beyond NSQ) carries its label; the other does not.
        self.assertEqual(len(self.rows("#node-topics-table tr[data-channel='ledger'] .label-ordered")), 1)
        self.assertEqual(self.rows("#node-topics-table tr[data-channel='audit'] .label-ordered"), [])
        node_clients = self.rows("#node-clients-table tr[data-node]")
        self.assertEqual(len(node_clients), 1, node_clients)
        for markup in (XSS_HOSTNAME, XSS_CLIENT_ID, XSS_USER_AGENT):
            self.assertIn(markup, node_clients[0]["text"])
        self.assertEqual(browser.find_all("#content img, #content script, #content svg"), [])
        self.assert_no_xss()
        browser.save_screenshot("06-node")

        # The counter: a positive total that grows with publishing, without a reload.
        browser = self.open("/counter")
        before = self.number(browser.js_text("#counter-value") or "")
        self.assertEqual(before, 14, "every channel's message count: audit has 3 + 5, ledger 2 + 4")
        self.marked_page()
        self.publish(second, "orders", 7)
        browser.wait_for(
            "the counter grows by the 7 messages published",
            lambda d: browser.js_text("#counter-value") == "21",
        )
        self.assert_not_reloaded()
        browser.save_screenshot("07-counter")

        # The lookup page: the lookupd, the topic registered with no producer, the create form.
        browser = self.open("/lookup")
        self.assertEqual(browser.js_text("#lookupd-hosts"), self.lookupd.http_hostport)
        inactive = [row["topic"] for row in self.rows("#inactive-table tr[data-topic]")]
        self.assertEqual(inactive, ["dormant"])
        browser.wait_element("form#create-form button[data-action='create']")
        browser.save_screenshot("08-lookup")
        self.assert_no_xss()

    def test_channel_and_topic_actions(self) -> None:
        """
        On the channel page: pause shows the paused label in place and pauses the channel on
        every nsqd; unpause reverses it; empty leaves depth 0 everywhere; delete removes the
        channel from each nsqd and takes the browser to the topic page, which no longer lists
        it. Deleting the topic there removes it from each nsqd and from the topics list.
        """
        for node in self.nodes:
            self.create_channel(node, "acts", "work")
            self.publish(node, "acts", 4)
        self.wait_registered("acts", 2, ["work"])
        names = [self.node_name(n) for n in self.nodes]
        nodes_table = "#channel-nodes-table tr[data-node]"

        def paused_everywhere(wanted: bool) -> None:
            for node in self.nodes:
                wait_until(
                    f"nsqd {node.http_hostport} shows the channel paused={wanted}",
                    functools.partial(self.channel_field, node, "acts", "work", "paused"),
                    lambda paused: paused is wanted,
                    SETTLE_TIMEOUT,
                )

        browser = self.open("/topics/acts/work")
        self.marked_page()
        self.assertEqual(browser.find_all(".label-paused"), [])
        question = self.click_action("button[data-action='pause'][data-channel='work']")
        self.assertIn("work", question)
        browser.wait_element("h1 .label-paused")
        self.wait_flash("Done: pause channel acts/work.")
        paused_everywhere(True)
        browser.wait_for(
            "every node's row shows the paused label",
            lambda d: len(self.rows(nodes_table + " .label-paused")) == 2,
        )
        self.assert_not_reloaded()
        browser.save_screenshot("10-channel-paused")

        self.click_action("button[data-action='unpause'][data-channel='work']")
        browser.wait_gone(".label-paused")
        self.wait_flash("Done: unpause channel acts/work.")
        paused_everywhere(False)
        browser.wait_element("button[data-action='pause'][data-channel='work']")

        self.assertEqual(self.column(nodes_table, DEPTH), dict.fromkeys(names, 4))
        self.click_action("button[data-action='empty'][data-channel='work']")
        self.wait_flash("Done: empty channel acts/work.")
        for node in self.nodes:
            wait_until(
                f"nsqd {node.http_hostport} shows the channel emptied",
                functools.partial(self.channel_field, node, "acts", "work", "depth"),
                lambda depth: depth == 0,
                SETTLE_TIMEOUT,
            )
        browser.wait_for(
            "the page shows depth 0 on every node",
            lambda d: self.column(nodes_table, DEPTH) == dict.fromkeys(names, 0),
        )
        self.assert_not_reloaded()
        browser.save_screenshot("11-channel-emptied")

        delete = "button[data-action='delete'][data-channel='work']"
        after = browser.js_attribute(delete, "data-after")
        self.assertEqual(after, "/topics/acts")
        self.click_action(delete)
        for node in self.nodes:
            wait_until(
                f"nsqd {node.http_hostport} no longer has the channel",
                functools.partial(self.channel_stats, node, "acts", "work"),
                lambda stats: stats is None,
                SETTLE_TIMEOUT,
            )
        browser.wait_for(
            "the browser goes to the topic page", lambda d: urllib.parse.urlsplit(d.current_url).path == after
        )
        browser.wait_element("main#content[data-page='topic']")
        self.assertEqual(self.rows("#channels-table tr[data-channel]"), [])
        self.assertEqual(self.column("#topic-nodes-table tr[data-node]", MESSAGES), dict.fromkeys(names, 4))
        browser.save_screenshot("12-channel-deleted")

        question = self.click_action("button[data-action='delete'][data-topic='acts']:not([data-channel])")
        self.assertIn("acts", question)
        for node in self.nodes:
            wait_until(
                f"nsqd {node.http_hostport} no longer has the topic",
                functools.partial(self.topic_stats, node, "acts"),
                lambda stats: stats is None,
                SETTLE_TIMEOUT,
            )
        browser.wait_element("main#content[data-page='topics']")
        self.assertEqual(urllib.parse.urlsplit(browser.driver.current_url).path, "/topics")
        self.assertEqual(self.rows("tr[data-topic='acts']"), [])
        browser.save_screenshot("13-topic-deleted")

    def test_tombstone_from_node_page(self) -> None:
        """
        The node page's tombstone action removes the topic from that nsqd and hides that node from
        lookupd's C{/lookup}; the other node keeps it, and the page drops the row in place.
        """
        first, second = self.nodes
        for node in self.nodes:
            self.publish(node, "graves", 2)
            self.publish(node, "keep", 1)
        self.wait_registered("graves", 2)
        tombstoned = self.node_name(second)

        browser = self.open(f"/nodes/{tombstoned}")
        self.marked_page()
        question = self.click_action(
            f"button[data-action='tombstone'][data-topic='graves'][data-node='{tombstoned}']"
        )
        self.assertIn("graves", question)
        self.assertIn(tombstoned, question)
        self.wait_flash(f"Done: tombstone topic graves on {tombstoned}.")
        wait_until(
            "the tombstoned nsqd no longer has the topic",
            lambda: self.topic_stats(second, "graves"),
            lambda stats: stats is None,
            SETTLE_TIMEOUT,
        )
        self.assertIsNotNone(self.topic_stats(first, "graves"))
        self.wait_registered("graves", 1)
        browser.wait_gone("#node-topics-table tr[data-topic='graves']")
        self.assertEqual(len(self.rows("#node-topics-table tr[data-topic='keep']")), 1)
        self.assert_not_reloaded()
        browser.save_screenshot("14-node-tombstoned")

    def test_create_from_lookup_page(self) -> None:
        """The lookup page's form registers a topic and a channel in lookupd; the page lists them."""
        browser = self.open("/lookup")
        self.marked_page()
        form = browser.wait_element("form#create-form")
        form.find_element(By.CSS_SELECTOR, "input[name='topic']").send_keys("fresh")
        form.find_element(By.CSS_SELECTOR, "input[name='channel']").send_keys("newbie")
        question = self.click_action("form#create-form button[data-action='create']")
        self.assertIn("fresh", question)
        self.wait_flash("Done: create channel fresh/newbie.")
        lookupd = f"http://{self.lookupd.http_hostport}"
        wait_until(
            "lookupd lists the topic",
            lambda: http_json(f"{lookupd}/topics")["topics"],
            lambda topics: "fresh" in topics,
            SETTLE_TIMEOUT,
        )
        wait_until(
            "lookupd lists the channel",
            lambda: http_json(f"{lookupd}/channels?topic=fresh")["channels"],
            lambda channels: channels == ["newbie"],
            SETTLE_TIMEOUT,
        )
        browser.wait_element("#inactive-table tr[data-topic='fresh'][data-channel='newbie']")
        self.assert_not_reloaded()
        browser.save_screenshot("15-lookup-created")

    def test_failed_action_is_flashed(self) -> None:
        """
        An action nsqadmin cannot carry out (the topic vanished from lookupd behind the page's
        back) is reported as an error in the flash area; the page stays as it was.
        """
        first, _ = self.nodes
        self.create_channel(first, "vanish", "gone")
        self.wait_registered("vanish", 1, ["gone"])
        # No auto-refresh: it would replace the page with the error page once the topic is gone.
        browser = self.open("/topics/vanish/gone", refresh="0")
        self.marked_page()
        http_ok("POST", f"http://{first.http_hostport}/topic/delete?topic=vanish")
        http_ok("POST", f"http://{self.lookupd.http_hostport}/topic/delete?topic=vanish")
        self.click_action("button[data-action='pause'][data-channel='gone']")
        self.wait_flash("Could not pause channel vanish/gone: UPSTREAM_ERROR", kind="error")
        self.assertEqual(browser.find_all(".label-paused"), [])
        self.assertEqual(self.rows("#flash .flash-item.ok"), [])
        self.assert_not_reloaded()
        # The browser logs the API's 502 answer to the POST; nothing else went wrong.
        logged = browser.console_errors()
        self.assertEqual(len(logged), 1, logged)
        self.assertIn("/api/topics/vanish/gone - Failed to load resource", logged[0])
        self.assertIn("502", logged[0])
        browser.save_screenshot("17-action-failed")

    def test_auto_refresh(self) -> None:
        """
        A topic page updates its numbers as messages arrive, in place: no navigation happens (a
        marker set on the window survives, and the page has one navigation entry).
        """
        first, _ = self.nodes
        self.publish(first, "live", 1)
        self.wait_registered("live", 1)
        row = f"#topic-nodes-table tr[data-node='{self.node_name(first)}']"
        browser = self.open("/topics/live")
        self.assertEqual(browser.js_attribute("main#content", "data-refresh-interval"), "500")
        self.assertEqual(self.column(row, DEPTH), {self.node_name(first): 1})
        self.marked_page()
        self.publish(first, "live", 11)
        browser.wait_for(
            "the page shows the new depth and message count",
            lambda d: (
                (self.column(row, DEPTH), self.column(row, MESSAGES))
                == ({self.node_name(first): 12}, {self.node_name(first): 12})
            ),
        )
        self.assert_not_reloaded()
        browser.save_screenshot("16-auto-refreshed")

    def test_pages_without_javascript(self) -> None:
        """
        Every page is complete HTML: fetched without a browser, its tables and rows are there, and
        the consumer's IDENTIFY markup is escaped.
        """
        first, _ = self.nodes
        self.create_channel(first, "plain", "reader")
        self.publish(first, "plain", 2)
        http_ok("POST", f"http://{self.lookupd.http_hostport}/topic/create?topic=idle")
        self.wait_registered("plain", 1, ["reader"])
        self.connect_consumer("plain", "reader")
        node = self.node_name(first)
        expected = {
            "/": ["topics-table", 'data-topic="plain"'],
            "/topics": ["topics-table", 'data-topic="plain"'],
            "/topics/plain": [
                "topic-nodes-table",
                "channels-table",
                f'data-node="{node}"',
                'data-channel="reader"',
            ],
            "/topics/plain/reader": ["channel-nodes-table", "clients-table", f'data-node="{node}"'],
            "/nodes": ["nodes-table", f'data-node="{node}"'],
            f"/nodes/{node}": ["node-topics-table", "node-clients-table", 'data-topic="plain"'],
            "/counter": ["counter-value"],
            "/lookup": ["inactive-table", 'data-topic="idle"'],
        }
        for path, needles in expected.items():
            status, headers, body = http_request("GET", self.url(path, refresh=None))
            self.assertEqual(status, 200, f"{path}: {body!r}")
            html = body.decode("utf-8")
            self.assertIn("text/html", headers.get("Content-Type", ""), path)
            self.assertIn("default-src 'self'", headers.get("Content-Security-Policy", ""), path)
            self.assertIn('<main id="content"', html, path)
            for needle in needles:
                if "=" in needle:
                    self.assertIn(needle, html, path)
                else:
                    self.assertRegex(html, rf'<(table|p)\b[^>]*\bid="{re.escape(needle)}"', path)
            if path in ("/topics/plain/reader", f"/nodes/{node}"):
                for markup in (XSS_CLIENT_ID, XSS_USER_AGENT, XSS_HOSTNAME):
                    self.assertNotIn(markup, html, path)
                    self.assertIn(markup.replace("<", "&lt;").replace(">", "&gt;"), html, path)
