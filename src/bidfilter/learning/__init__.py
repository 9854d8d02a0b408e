"""Learning once live: judging a retrained model on the traffic a filter shaped, promoting it
only when it is not worse (``promotion``), and the closed-loop simulation that proves the whole
loop on a synthetic month (``loop``)."""
