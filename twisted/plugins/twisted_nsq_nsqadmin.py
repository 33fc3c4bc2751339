from twisted.application.service import ServiceMaker

nsqadmin = ServiceMaker(  # type: ignore[no-untyped-call]
    "nsqadmin",
    "twisted_nsq.nsqadmin.tap",
    "An NSQ 1.3.0-compatible nsqadmin (Go-style flags)",
    "nsqadmin",
)
