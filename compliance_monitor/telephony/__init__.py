"""What the monitor does to phone calls through each PBX or carrier: hang up, warn the collector."""
