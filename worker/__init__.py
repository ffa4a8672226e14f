"""huimin-worker: the HIS <-> Qingyuan medical-insurance benefit platform integration.

Importing this package has no side effects: no sockets, no threads, no metrics registered.
"""

__version__ = "0.1.0"
