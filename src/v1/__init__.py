"""Generated from proto/onshi/v1 by scripts/proto.sh; do not edit."""
