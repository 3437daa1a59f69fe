"""`cpnet demo`: a whole compute power internet on one machine, with a mixed workload.

``network`` (a local hub and agents as processes) is reusable on its own, e.g. by benchmarks.
"""

from cpnet.demo.scenario import run_demo

__all__ = ["run_demo"]
