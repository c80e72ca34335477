"""The twin's built-in capabilities, each a plugin package registered by entry point."""
