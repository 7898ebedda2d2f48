"""Health for the technician: one status document, shown four ways.

``model`` (pure) builds the document from what the daemon knows and an
explicit clock; ``text`` renders it for ``gateway status``, ``metrics`` as
Prometheus text exposition, ``page`` is the phone-sized HTML page that polls
``/status``, and ``http`` serves all three from the daemon (asyncio streams,
GET only). Every view is rendered from the same document, so they agree.
"""

from .model import Facts, SensorFacts, build_status, sensor_state
from .text import render_text

__all__ = ["Facts", "SensorFacts", "build_status", "render_text", "sensor_state"]
