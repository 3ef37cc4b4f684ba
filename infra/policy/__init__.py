"""The workshop's policy pack (run with `pulumi preview --policy-pack infra/policy`)."""
