"""nsqlookupd: the discovery service nsqd nodes register with and clients look producers up on."""
