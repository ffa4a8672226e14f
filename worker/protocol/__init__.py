"""The platform's protocol, pure: SM3/SM4 primitives, the envelope (and explaining a signature
mismatch), typed payloads per transCode, the transaction registry, verdicts on answers and
answer matching. No I/O."""
