"""The web UI: a Gradio page, a client of the HTTP API, in a process of its own.

Runs in the UI process (``python -m watchkeeper.ui``), which the front starts and watches. One
tab per served model, generated from its published schema at page load, and a Service tab; it
imports nothing of the server (front, scheduling, supervision, worker, jobs, apps).
"""

__all__ = []
