"""The version twisted-nsq reports: NSQ's release it matches, with our suffix."""

NSQ_VERSION = "1.3.0"
__version__ = "1.3.0"
VERSION_STRING = f"{NSQ_VERSION}-twisted"
