"""ComfyUI 0.3.64's protocol, written once for the gateway, the worker and the test double.

- `catalog`: reading an `/object_info` catalogue (output nodes, input specs, which inputs are
  file references to uploads or model files) and deriving a catalogue with other file lists.
- `validation`: `POST /prompt`'s validation with ComfyUI's semantics and exact error shapes.
- `shapes`: builders for the bodies and messages ComfyUI sends (`/prompt`, `/queue`,
  `/history`, `status`, ...).

Standard library only: the gateway (production) and the test double both import it.
"""
