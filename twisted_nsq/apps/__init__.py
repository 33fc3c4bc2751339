"""
The NSQ utilities (Go's C{apps/}) built on L{twisted_nsq.client}: C{nsq_tail}, C{to_nsq} and
C{nsq_stat}, each with Go's flags.
"""
