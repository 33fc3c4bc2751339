from twisted.application.service import ServiceMaker

nsqlookupd = ServiceMaker(  # type: ignore[no-untyped-call]
    "nsqlookupd",
    "twisted_nsq.nsqlookupd.tap",
    "An NSQ 1.3.0-compatible nsqlookupd (Go-style flags)",
    "nsqlookupd",
)
