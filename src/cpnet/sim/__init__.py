"""The trace-driven, deterministic discrete-event simulator: real traces, a national network,
the hub's own scheduler and lifecycle, and lower bounds to judge policies against.

``cpnet sim --help`` runs it; ``docs/simulator.md`` explains the model.
"""
