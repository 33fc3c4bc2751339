"""Tests for L{twisted_nsq.apps._hostpool}."""

from __future__ import annotations

import random

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_nsq.apps._hostpool import EpsilonGreedyPool, HostPool, RoundRobin, make_selector


class _Always:
    """A random source returning one value, to steer epsilon-greedy's choices."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


class RoundRobinTests(SynchronousTestCase):
    def test_turns(self) -> None:
        """Every address in turn (Go's counter starts with the second), whatever the outcome."""
        selector = RoundRobin(["a", "b", "c"], Clock())
        picks = [selector.get() for _ in range(4)]
        for pick in picks:
            pick.mark(False)
        self.assertEqual([pick.host for pick in picks], ["b", "c", "a", "b"])

    def test_needs_hosts(self) -> None:
        """An empty address list is refused."""
        self.assertRaises(ValueError, RoundRobin, [], Clock())


class HostPoolTests(SynchronousTestCase):
    def test_healthy_in_turn(self) -> None:
        """Healthy addresses are used in turn from the first."""
        pool = HostPool(["a", "b"], Clock())
        self.assertEqual([pool.get().host for _ in range(3)], ["a", "b", "a"])

    def test_dead_skipped_then_retried_with_backoff(self) -> None:
        """
        A failed address is skipped for 30 s, then tried once; failing again does not reset the
        wait, which doubles at each retry; a success revives it.
        """
        clock = Clock()
        pool = HostPool(["a", "b"], clock)
        pool.get().mark(False)  # a fails
        self.assertTrue(pool.is_dead("a"))
        self.assertEqual([pool.get().host for _ in range(3)], ["b", "b", "b"])
        clock.advance(30.5)
        retry = pool.get()
        self.assertEqual(retry.host, "a")
        retry.mark(False)
        # The retry doubled the delay to 60 s.
        clock.advance(59)
        self.assertEqual(pool.get().host, "b")
        clock.advance(2)
        retry = pool.get()
        self.assertEqual(retry.host, "a")
        retry.mark(True)
        self.assertFalse(pool.is_dead("a"))
        self.assertEqual(sorted(pool.get().host for _ in range(2)), ["a", "b"])

    def test_all_dead_revived(self) -> None:
        """When every address is dead and waiting, all are revived and the first is used."""
        pool = HostPool(["a", "b"], Clock())
        pool.get().mark(False)
        pool.get().mark(False)
        pick = pool.get()
        self.assertEqual(pick.host, "a")
        self.assertFalse(pool.is_dead("a"))
        self.assertFalse(pool.is_dead("b"))

    def test_mark_once(self) -> None:
        """Only the first mark of a pick counts."""
        pool = HostPool(["a", "b"], Clock())
        pick = pool.get()
        pick.mark(True)
        pick.mark(False)
        self.assertFalse(pool.is_dead("a"))


class EpsilonGreedyTests(SynchronousTestCase):
    def test_prefers_fast_host(self) -> None:
        """Once timings are known, exploitation picks by inverse response time."""
        clock = Clock()
        rng = _Always(0.5)
        pool = EpsilonGreedyPool(["slow", "fast"], clock, rng)  # type: ignore[arg-type]
        pool.epsilon = 0.0
        # Without timings the pool goes round the addresses.
        slow, fast = pool.get(), pool.get()
        self.assertEqual((slow.host, fast.host), ("slow", "fast"))
        clock.advance(0.1)
        fast.mark(True)
        clock.advance(0.8)
        slow.mark(True)
        # Values 1/900 and 1/100: "slow" covers the first 10% of the draw, "fast" the rest.
        self.assertEqual(pool.get().host, "fast")
        rng.value = 0.05
        self.assertEqual(pool.get().host, "slow")

    def test_explores_and_decays(self) -> None:
        """A draw below epsilon explores round-robin and shrinks epsilon by 0.9 (at least 0.01)."""
        pool = EpsilonGreedyPool(["a", "b"], Clock(), _Always(0.0))  # type: ignore[arg-type]
        pool.get()
        self.assertAlmostEqual(pool.epsilon, 0.27)
        for _ in range(100):
            pool.get()
        self.assertAlmostEqual(pool.epsilon, 0.01)

    def test_timings_decay(self) -> None:
        """After the 5 minute window the timings are forgotten and picks go round again."""
        clock = Clock()
        pool = EpsilonGreedyPool(["a", "b"], clock, _Always(0.5))  # type: ignore[arg-type]
        pool.epsilon = 0.0
        pick = pool.get()
        clock.advance(0.2)
        pick.mark(True)
        self.assertEqual([pool.get().host for _ in range(2)], ["a", "a"])
        clock.advance(301)
        self.assertEqual([pool.get().host for _ in range(2)], ["b", "a"])


class MakeSelectorTests(SynchronousTestCase):
    def test_modes(self) -> None:
        """Each --mode maps to its selector."""
        clock, rng = Clock(), random.Random(1)
        self.assertIs(type(make_selector("round-robin", ["a"], clock, rng)), RoundRobin)
        self.assertIs(type(make_selector("hostpool", ["a"], clock, rng)), HostPool)
        self.assertIs(type(make_selector("epsilon-greedy", ["a"], clock, rng)), EpsilonGreedyPool)
        self.assertRaises(ValueError, make_selector, "multicast", ["a"], clock, rng)
