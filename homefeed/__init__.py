"""homefeed: build, ship and run a personalized home feed."""

__version__ = "0.1.0"
