"""The GPU worker: drives one headless ComfyUI for the queue (`python -m services.worker`).

One module per concern: `settings` (WORKER_* environment), `comfy` (ComfyUI's HTTP API and
WebSocket), `supervisor` (start, watch and restart a managed ComfyUI, or watch an attached
one), `queue` (the queue's worker protocol), `files` (participants' inputs into ComfyUI, its
outputs into object storage), `relay` (ComfyUI's messages to the queue, in order), `runner`
(one job from lease to completion), `worker` (leasing, heartbeats, cancel, shutdown, idle exit,
the status file), `__main__` (the entry point). See docs/architecture.md, "The worker".
"""
