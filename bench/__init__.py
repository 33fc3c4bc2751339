"""twisted-nsq benchmarks: `make bench`."""
