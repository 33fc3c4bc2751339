"""twisted-nsq: NSQ 1.3.0, wire-compatible, built on Twisted."""

from twisted_nsq._version import __version__

__all__ = ["__version__"]
