"""Fixtures for the client tests: a fake BidFilter server, always stopped."""

from client_fake_server import fake_server

__all__ = ["fake_server"]
