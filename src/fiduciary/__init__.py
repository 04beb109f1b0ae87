"""Fiduciary: a customer-data vault and privacy-operations system for insurers."""

__version__ = "0.1.0"
