"""What goes wrong running a local cluster, each error naming the setting or process at fault."""

from __future__ import annotations


class ClusterError(Exception):
    """The cluster cannot do what was asked; ``field`` names the culprit.

    Typical fields: ``"haproxy"`` (not installed, bad config, died), ``"port"`` (in use),
    ``"state_dir"`` (already holds a running cluster, path too long), ``"server-2"`` (a server
    that exited or never became ready), ``"timeout"``.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
