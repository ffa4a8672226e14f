"""The inbound gateway: the platform calling the hospital (spec 3.1.2-3.1.4, issue 9).

verify.py     pure: the raw body -> Accepted or a Refusal (rtCode, rtMsg, metric cause)
events.py     pure: the platform.events message, its eventId, the HIS00003 reply's answer
service.py    one call: verify, remember the platformSeqId, publish / ask the HIS, answer
publisher.py  RabbitMQ (pooled py-amqp links, confirms, direct reply-to) and in-memory
app.py        the ASGI app: POST /, /healthz, /readyz, /metrics, body limit, concurrency
metrics.py    the gateway's Prometheus metrics
server.py     build from settings, serve with uvicorn
contract.py   pure: the platform.events JSON Schemas and AsyncAPI parts (worker.schema.generate)
demo.py       the demo's act where the platform calls the hospital
"""
