"""Synthetic OpenRTB 2.6 traffic with hidden partner policies (the ground truth to learn).

``generate(out_dir, requests=..., partners=..., seed=...)`` writes auction logs in the
:mod:`bidfilter.logs` format: realistic bid requests (site/app/CTV, banner/video/native/audio,
devices, geo, privacy signals, deals, supply chains) and, per partner, whether it bid, at what
price, and the true bid probability its hidden policy computed.
"""

from bidfilter.synth.generate import SynthError, SynthSummary, WorldChanges, generate
from bidfilter.synth.partners import partner_ids

__all__ = ["SynthError", "SynthSummary", "WorldChanges", "generate", "partner_ids"]
