"""syncd: offline sync of learner activity logs between the devices of a school."""

__version__ = "0.1.0"
