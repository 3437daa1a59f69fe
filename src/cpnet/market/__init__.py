"""The market: money in minor units, the double-entry ledger's rules, what a task is charged.

Pure: plain data in, plain data out; the store (``store/ledger.py``) writes what these return.
"""
