"""The clinic terminal (onshi[terminal]): reads a My Number card over PC/SC,
proves it with the PIN, asks the eligibility service over mTLS and shows the
result with next steps for reception staff. See docs/TERMINAL.md."""
