"""orderpay: payments back office for merchants paid by mobile money."""

__version__ = "0.1.0"
