"""onshi: the open eligibility core for online insurance-qualification checks."""

__version__ = "0.1.0"
