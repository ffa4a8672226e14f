"""Talking to the platform: the client (one business call, its attempts and deadline) over an
injected httpx transport, and the production HTTP transport."""
