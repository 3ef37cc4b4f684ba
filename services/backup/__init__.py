"""Back up and restore the control plane's state (Redis keys + local files) to object storage."""
