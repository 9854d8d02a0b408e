"""bidfilter: predict which demand partners will bid on an OpenRTB request, and filter the rest."""

__version__ = "0.1.0"
