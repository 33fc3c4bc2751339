"""Tests for L{twisted_nsq.nsqlookupd}."""
