"""The demo's small simulated world: instructions, a gold standard of quality, users, labelers, web text."""
