"""The playground's refusals, apart from the modules that compute, so that the server can bind
and serve the page before they (and torch's and matplotlib's heavy imports) are loaded."""

from __future__ import annotations


class PlaygroundError(ValueError):
    """A request the playground refuses; the message is shown to the user as is."""


class BusyError(RuntimeError):
    """The computation slot (or the start-up) took longer than its bounded wait."""


#: The longest page client id accepted (the newest request of each page wins).
MAX_CLIENT_CHARS = 64
