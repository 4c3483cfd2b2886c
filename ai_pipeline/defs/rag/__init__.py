"""The documents lane: assets, collection checks and the document sensor."""
