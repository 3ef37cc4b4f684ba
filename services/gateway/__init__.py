"""The participant gateway: every participant's own ComfyUI (the official frontend and
ComfyUI's HTTP and WebSocket API) under `/userNNN/`, backed by the shared queue.

One stateless process for everyone (replicas behind Caddy): no Redis, no passwords. It signs
participants in through the queue, calls the queue's API and event stream with each
participant's own token, and reads and writes object storage under their prefix only.
Modules: `settings`, `auth`, `queue_client`, `app` (routing and the root paths), `routes`,
`prompts` (/prompt, /queue, /history, /interrupt), `files` (/view, uploads), `userdata`
(/userdata, /settings, /users), `info` (/system_stats, /object_info, ...), `catalog`,
`bridge` (/ws), `frontend` (the frontend's files), `workshop` (the extension's data),
`extension/` (the frontend extension).
"""
