"""``bidfilter serve``: the Thrift inference server (supervisor, workers, codec loop, metrics)."""
