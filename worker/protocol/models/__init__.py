"""Typed business payloads for every platform transaction, one module per family.

`base` (shared field types), `enums` (code lists), `payment`, `settlement`, `claims`,
`claim_cases`, `inbound` (the models) and `examples` (one valid example each). The table that
maps a transCode to its models is `worker.protocol.registry`.
"""
