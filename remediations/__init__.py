"""wsguard: remediate and guard the settings that keep WebSockets alive behind nginx."""

__version__ = "0.1.0"
