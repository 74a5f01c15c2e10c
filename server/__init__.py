"""Tornado real-time chat server: WebSockets, Redis pub/sub fan-out, MongoDB history."""

__version__ = "0.1.0"
