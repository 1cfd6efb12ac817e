"""The HTTP job API: validates requests, enqueues generation jobs on Redis (rq), serves results.

It never imports torch: workers do the generating (see `worker`).
"""
