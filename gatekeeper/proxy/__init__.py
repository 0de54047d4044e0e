"""The HTTP edge: aiohttp types stop here; everything below works on plain data."""
