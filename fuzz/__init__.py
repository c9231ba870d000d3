"""The fuzz harness (``make fuzz``, docs/fuzz.md): hostile MQTT payloads and RS-485 bytes against the real
bridge process, and a coverage-guided fuzzer over the parsers. Not part of ``make test``; the inputs it
finds are replayed there (tests/test_fuzz_regressions.py)."""
