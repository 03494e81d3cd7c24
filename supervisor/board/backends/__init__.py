"""Boot-config backends, one module each (config.md §5.3); `board/bootconfig.py` picks them."""
