"""The ClientApp every node of this Flower app runs: the honest client, wrapped.

The honest handlers (``clients.client_app``) know nothing of attacks; the Byzantine mod
(``clients.byzantine.byzantine_mod``) decides from the node's configuration whether this node
is Byzantine and, if so, rewrites its reply.  Honest nodes pass through untouched.
"""

from __future__ import annotations

from .byzantine import wrap_client_app
from .client_app import app as honest_app

app = wrap_client_app(honest_app)

__all__ = ["app", "honest_app"]
