"""The long-running hub: wiring of store, keys and the background loops around the pure core."""
