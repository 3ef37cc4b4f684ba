"""The workshop's control plane as a Pulumi program (see docs/infrastructure.md)."""
