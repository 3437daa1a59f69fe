"""The market: price books and binding quotes, money in minor units, the double-entry ledger's
rules, and what a task is charged.

Pure: plain data in, plain data out; the hub and the store (``store/ledger.py``) hold the state.
"""
