"""
The NSQ utilities (Go's C{apps/}) built on L{twisted_nsq.client}: C{nsq_tail}, C{to_nsq},
C{nsq_stat}, C{nsq_to_file}, C{nsq_to_http} and C{nsq_to_nsq}, each with Go's flags.
"""
