"""The practice lakehouse: the source generator, incident drills and the demo."""
