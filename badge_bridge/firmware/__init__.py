"""The firmware file (``firmware.toml``, docs/firmware.md): what each controller should run, and the checks
that refuse an unsafe one. The bridge reads it at start for the OSDP readers' patterns; firmware_config
compares it with the devices and pushes it."""
