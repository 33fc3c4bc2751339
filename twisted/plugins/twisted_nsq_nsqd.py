from twisted.application.service import ServiceMaker

nsqd = ServiceMaker(  # type: ignore[no-untyped-call]
    "nsqd", "twisted_nsq.nsqd.tap", "An NSQ 1.3.0-compatible nsqd (Go-style flags)", "nsqd"
)
