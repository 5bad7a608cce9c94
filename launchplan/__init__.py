"""cei: launch plans for clouds."""

__version__ = "0.1.0"
