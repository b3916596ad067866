"""Drivers: the container engine and the GPU inventory, behind small seams."""
