"""Subnet manager and subnet administrator (sans-IO cores, and the driver that runs them on an HCA)."""
